"""Preprocessing specs (parse, JSON, errors), image loading, sample collection and the progress bar."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lrpc_runtime import Preprocessing, load_image
from lrpc_runtime.inputs import collect, load_samples
from lrpc_runtime.preprocess import image_layout
from lrpc_runtime.progress import Progress, bar_line


def test_spec_parses_and_round_trips_through_json():
    spec = Preprocessing.parse(
        "resize=224,224; scale=1/255; mean=0.485,0.456,0.406; std=0.229,0.224,0.225; layout=nhwc; color=RGB; invert=1"
    )
    assert spec.resize == (224, 224) and spec.scale == pytest.approx(1 / 255)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.layout == "NHWC" and spec.color == "rgb" and spec.invert
    assert Preprocessing.from_json(spec.to_json()) == spec
    assert Preprocessing.parse("") == Preprocessing() and Preprocessing().to_json() == "{}"
    assert "resize 224×224" in spec.describe() and spec.describe().endswith("invert")


@pytest.mark.parametrize(
    "text, message",
    [
        ("size=3", "KEY one of resize"),
        ("resize=8", "height and width"),
        ("scale=abc", "'abc' is not a number"),
        ("scale=1/0", "is not a number"),
        ("layout=CHW", "choose NCHW or NHWC"),
        ("std=0", "divides by zero"),
        ("invert=maybe", "give 1 or 0"),
        ("scale=1;scale=2", "given twice"),
    ],
)
def test_bad_specs_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        Preprocessing.parse(text)


def test_layout_is_guessed_from_the_input_shape():
    assert image_layout(("n", 1, 8, 8)) == ("NCHW", 1, (8, 8))
    assert image_layout(("n", 224, 224, 3)) == ("NHWC", 3, (224, 224))
    assert image_layout(("n", 3, "h", "w")) == ("NCHW", 3, (None, None))
    with pytest.raises(ValueError, match="images need"):
        image_layout(("n", 64))


def _png(path, array, mode="L"):
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_an_enlarged_digit_comes_back_exactly(tmp_path):
    digit = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8)
    big = np.repeat(np.repeat(digit, 8, axis=0), 8, axis=1)
    x = load_image(_png(tmp_path / "d.png", big), Preprocessing(), ("batch", 1, 8, 8))
    assert x.shape == (1, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], digit / 255.0, atol=1e-7)
    inverted = load_image(tmp_path / "d.png", Preprocessing(invert=True, scale=1.0), ("batch", 1, 8, 8))
    np.testing.assert_allclose(inverted[0], 255.0 - digit, atol=1e-4)


def test_rgb_normalization_and_layouts(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    path = _png(tmp_path / "c.png", rgb, "RGB")
    spec = Preprocessing.parse("mean=0.5,0.5,0.5;std=0.5,0.25,1")
    nchw = load_image(path, spec, ("n", 3, 4, 6))
    nhwc = load_image(path, spec, ("n", 4, 6, 3))
    assert nchw.shape == (3, 4, 6) and nhwc.shape == (4, 6, 3)
    np.testing.assert_allclose(nchw[:, 0, 0], [(1 - 0.5) / 0.5, (128 / 255 - 0.5) / 0.25, -0.5], rtol=1e-6)
    np.testing.assert_array_equal(np.moveaxis(nchw, 0, -1), nhwc)
    resized = load_image(path, Preprocessing(resize=(8, 12)), ("n", 3, "h", "w"))
    assert resized.shape == (3, 8, 12)


@pytest.mark.parametrize(
    "spec, shape, message",
    [
        (Preprocessing(color="rgb"), ("n", 1, 8, 8), "the model input has 1"),
        (Preprocessing(mean=(0.1, 0.2)), ("n", 3, 4, 6), "2 values for a 3-channel input"),
        (Preprocessing(), ("n", 3, "h", "w"), "give resize=H,W"),
    ],
)
def test_image_errors(tmp_path, spec, shape, message):
    path = _png(tmp_path / "c.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match=message):
        load_image(path, spec, shape)


def test_a_file_that_is_not_an_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: cannot read the image"):
        load_image(bad, Preprocessing(), ("n", 1, 8, 8))


def test_collect_expands_folders_and_batches_with_unique_names(tmp_path):
    (tmp_path / "a").mkdir()
    _png(tmp_path / "a" / "x.png", np.zeros((8, 8), np.uint8))
    np.save(tmp_path / "a" / "batch.npy", np.ones((3, 1, 8, 8), np.float32))
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    np.save(tmp_path / "x.npy", np.full((1, 8, 8), 2, np.float32))
    refs = collect([tmp_path / "a", tmp_path / "x.npy"], input_rank=4)
    assert [r.name for r in refs] == ["batch_0", "batch_1", "batch_2", "x", "x-2"]
    assert [r.index for r in refs] == [0, 1, 2, None, None]
    batch = load_samples(refs, Preprocessing(), ("n", 1, 8, 8))
    assert batch.shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(batch[:, 0, 0, 0], [1, 1, 1, 0, 2])


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty", "has no images"),
        ("missing", "no such file or folder"),
        ("txt", "not an image"),
        ("rank", "the model input has rank 4"),
    ],
)
def test_collect_errors(tmp_path, setup, message):
    target = tmp_path / "thing"
    if setup == "empty":
        target.mkdir()
    elif setup == "txt":
        target = tmp_path / "thing.txt"
        target.write_text("x")
    elif setup == "rank":
        target = tmp_path / "thing.npy"
        np.save(target, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=message):
        collect([target], input_rank=4)


def test_progress_bar_draws_only_when_enabled():
    assert bar_line("explaining", 5, 10, 2.0) == "explaining  5/10 [############............]  50%  2.0/s"
    quiet, shown = io.StringIO(), io.StringIO()
    with Progress(4, "explaining", stream=quiet) as bar:  # a StringIO is not a terminal
        bar.advance(4)
    with Progress(4, "explaining", stream=shown, enabled=True) as bar:
        bar.advance(2)
        bar.advance(2)
    assert quiet.getvalue() == ""
    assert shown.getvalue().count("\r") == 2 and " 4/4 [" in shown.getvalue() and shown.getvalue().endswith("\n")
