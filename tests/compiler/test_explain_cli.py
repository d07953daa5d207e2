"""`lrpc explain` and lrpc_runtime.explain_files on the bundled digits CNN: a folder of digit PNGs in,
heatmaps and a predictions table out; the heatmaps put their relevance on the strokes."""

from __future__ import annotations

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import lrpc
from lrpc.cli import main
from lrpc_runtime import Explainer, explain_files
from nets import small_cnn

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS = np.load(ROOT / "models" / "digits_test.npz")
COUNT = 10


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> pathlib.Path:
    """The first test digits as 64×64 PNGs (8× enlarged), as scripts/demo.py writes them."""
    folder = tmp_path_factory.mktemp("digits")
    for i in range(COUNT):
        gray = Image.fromarray(np.rint(DIGITS["x"][i, 0] * 255).astype(np.uint8))
        gray.resize((64, 64), Image.Resampling.NEAREST).save(folder / f"digit{i:02d}.png")
    return folder


def run(*args) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "lrpc.cli", *map(str, args)], capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def test_a_folder_of_digits_gives_heatmaps_and_predictions(explained, digit_folder, tmp_path):
    out = tmp_path / "heatmaps"
    code, stdout, stderr = run("explain", explained, digit_folder, "-o", out)
    assert code == 0, stderr
    assert f"explained {COUNT} samples" in stdout and "the spec stored in the file" in stdout
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["input"] for r in rows] == [f"digit{i:02d}" for i in range(COUNT)]
    reference = Explainer(explained).explain(DIGITS["x"][:COUNT])
    predicted = reference.output.argmax(1)
    assert [int(r["predicted"]) for r in rows] == predicted.tolist() == [int(r["target"]) for r in rows]
    assert (predicted == DIGITS["y"][:COUNT]).mean() >= 0.9
    sums = reference.relevance_map.reshape(COUNT, -1).sum(1)
    np.testing.assert_allclose([float(r["relevance_sum"]) for r in rows], sums, rtol=2e-2)  # PNGs hold 8-bit pixels
    picture = np.asarray(Image.open(out / "digit00.png"))
    assert picture.shape == (128, 256, 3)  # the digit left, its heatmap right, 16× enlarged


def test_relevance_lies_on_the_strokes(explained, digit_folder, tmp_path):
    """What a person checks by eye: red where the digit's ink is, not on the empty background."""
    rows = explain_files(explained, [digit_folder], tmp_path / "out", save_relevance=True, progress=False)
    for i, row in enumerate(rows):
        relevance = np.load(tmp_path / "out" / f"{row['input']}.relevance.npy")[0]
        ink = DIGITS["x"][i, 0] > 0.3
        assert relevance[ink].mean() > 5 * max(relevance[~ink].mean(), 0), row["input"]
        heat = np.asarray(Image.open(tmp_path / "out" / row["heatmap"]), np.int32)[::16, 128::16]
        redness = heat[..., 0] - heat[..., 2]  # red minus blue, per 8×8 pixel
        assert redness[ink].mean() > redness[~ink].mean() + 20, row["input"]


def test_npy_inputs_json_table_and_overlay(explained, tmp_path):
    np.save(tmp_path / "batch.npy", DIGITS["x"][:3])
    np.save(tmp_path / "one.npy", DIGITS["x"][3])
    out = tmp_path / "out"
    code, _, stderr = run(
        "explain",
        explained,
        tmp_path / "batch.npy",
        tmp_path / "one.npy",
        "-o",
        out,
        "--format",
        "json",
        "--style",
        "overlay",
        "--batch-size",
        "2",
        "--save-relevance",
    )
    assert code == 0, stderr
    rows = json.loads((out / "predictions.json").read_text())
    assert [(r["input"], r["index"]) for r in rows] == [("batch_0", 0), ("batch_1", 1), ("batch_2", 2), ("one", None)]
    expected = Explainer(explained).explain(DIGITS["x"][:4]).relevance_map
    np.testing.assert_allclose(np.load(out / "one.relevance.npy"), expected[3], rtol=1e-5, atol=1e-7)
    assert np.asarray(Image.open(out / "one.png")).shape == (128, 128, 3)  # overlay: one panel


def test_low_memory_explains_the_same(explained, tmp_path):
    """--low-memory (weight prepacking off) gives the same predictions and the relevance to round-off."""
    np.save(tmp_path / "batch.npy", DIGITS["x"][:4])
    for name, extra in (("packed", []), ("low", ["--low-memory"])):
        argv = ["explain", str(explained), str(tmp_path / "batch.npy"), "-o", str(tmp_path / name), "-q"]
        assert main([*argv, "--save-relevance", *extra]) == 0
    packed, low = ((tmp_path / n / "predictions.csv").read_text() for n in ("packed", "low"))
    assert low == packed
    for i in range(4):
        np.testing.assert_allclose(
            np.load(tmp_path / "low" / f"batch_{i}.relevance.npy"),
            np.load(tmp_path / "packed" / f"batch_{i}.relevance.npy"),
            rtol=1e-5,
            atol=1e-7,
        )


def test_target_input_files_take_the_class_from_the_command_line(tmp_path):
    path = tmp_path / "t.onnx"
    lrpc.compile(ROOT / "models" / "digits_cnn.onnx", composite="EpsilonPlus", target="input", output=path)
    np.save(tmp_path / "x.npy", DIGITS["x"][:2])
    assert main(["explain", str(path), str(tmp_path / "x.npy"), "--target", "4", "-o", str(tmp_path / "o"), "-q"]) == 0
    with open(tmp_path / "o" / "predictions.csv", newline="") as f:
        assert [r["target"] for r in csv.DictReader(f)] == ["4", "4"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "cuda"], "CUDA was requested"),
        (["--target", "3"], "cannot be chosen per call"),
        (["--target", "three"], "--target takes a class index"),
        (["--preprocess", "mean=1,2"], "2 values for a 1-channel input"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_options_give_one_line_and_write_nothing(explained, digit_folder, tmp_path, args, message, capsys):
    if "cuda" in args and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    code = main(["explain", str(explained), str(digit_folder), "-o", str(tmp_path / "out"), *args])
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.startswith("lrpc: error: ") and message in stderr, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_a_broken_image_midway_leaves_no_partial_output(explained, digit_folder, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for png in sorted(digit_folder.iterdir())[:3]:
        (folder / png.name).write_bytes(png.read_bytes())
    (folder / "zz_truncated.png").write_bytes((digit_folder / "digit00.png").read_bytes()[:40])
    code, _, stderr = run("explain", explained, folder, "-o", tmp_path / "out", "--batch-size", "2")
    assert code == 2 and "zz_truncated.png: cannot read the image" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize(
    "model, message",
    [("plain", "is not an explained lrpc model"), ("text", "onnxruntime cannot load it"), ("missing", "no such file")],
)
def test_not_an_explained_file(tmp_path, digit_folder, model, message):
    path = {"plain": ROOT / "models" / "digits_cnn.onnx", "text": tmp_path / "t.onnx", "missing": tmp_path / "m.onnx"}
    path["text"].write_text("not a model\n")
    code, _, stderr = run("explain", path[model], digit_folder, "-o", tmp_path / "o")
    assert code == 2 and stderr.startswith("lrpc: error: ") and message in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["compile", "inspect", "explain", "verify"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"  lrpc {command} " in text


def test_mask_files_and_inputs_that_are_not_pictures(tmp_path, capsys):
    """--target MASK.npy repeats one sample's mask over the batch; 2-channel inputs get a heatmap alone."""
    path = tmp_path / "m.onnx"
    lrpc.compile(small_cnn(), rule="epsilon", target="mask", output=path)
    x = np.random.default_rng(0).random((3, 2, 8, 8)).astype(np.float32)
    mask = np.array([0, 1, 0, 0, 1], np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "mask.npy", mask)
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                str(path),
                str(tmp_path / "x.npy"),
                "--target",
                str(tmp_path / "mask.npy"),
                "-o",
                str(out),
                "--save-relevance",
                "-q",
            ]
        )
        == 0
    )
    expected = Explainer(path).explain(x, target=np.tile(mask, (3, 1))).relevance_map
    np.testing.assert_allclose(np.load(out / "x_1.relevance.npy"), expected[1], rtol=1e-5, atol=1e-7)
    assert np.asarray(Image.open(out / "x_1.png")).shape == (128, 128, 3)  # 2 channels: no input panel
    with open(out / "predictions.csv", newline="") as f:
        assert [r["target"] for r in csv.DictReader(f)] == ["mask"] * 3
