"""What `lrpc explain` reads, read right or refused: unique output names that the table maps to the right
files, 16-bit PNGs at full depth, and no complex, structured or non-finite arrays explained as if fine."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from lrpc_runtime import Explainer, explain_files
from lrpc_runtime.inputs import collect
from lrpc_runtime.preprocess import Preprocessing, load_image
from PIL import Image


def png16(path, values: np.ndarray) -> None:
    """A 16-bit PNG (gray [H, W] or RGB [H, W, 3]) written by hand: Pillow writes 16-bit gray only."""
    height, width = values.shape[:2]
    color = 2 if values.ndim == 3 else 0
    rows = b"".join(b"\x00" + values[i].astype(">u2").tobytes() for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def test_colliding_names_stay_unique_and_the_table_names_the_right_file(explained, tmp_path):
    """a-2.png, a.jpg and a.png once gave two samples the name a-2; names also differ in more than case."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "a.jpg", "a-2.png", "A.bmp"):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / name, quality=100)
    refs = collect([folder], input_rank=4)
    assert [(r.name, r.source.rsplit("/", 1)[1]) for r in refs] == [
        ("A", "A.bmp"),
        ("a-2", "a-2.png"),
        ("a-3", "a.jpg"),
        ("a-4", "a.png"),
    ]
    rows = explain_files(explained, [folder], tmp_path / "out", save_relevance=True, progress=False)
    assert len({r["heatmap"].casefold() for r in rows}) == 4
    explainer = Explainer(explained)
    spec = Preprocessing.from_json(explainer.metadata.preprocess)
    for row in rows:
        expected = explainer.explain(load_image(row["source"], spec, ("n", 1, 8, 8))[None]).relevance_map[0]
        np.testing.assert_allclose(
            np.load(tmp_path / "out" / f"{row['input']}.relevance.npy"), expected, rtol=1e-5, atol=1e-7
        )


def test_a_name_taken_later_by_a_stem_is_not_reused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    Image.new("L", (8, 8)).save(tmp_path / "x_0.png")
    refs = collect([tmp_path / "x.npy", tmp_path / "x_0.png"], input_rank=4)
    assert [r.name for r in refs] == ["x_0", "x_1", "x_0-2"]


def test_16_bit_gray_pngs_are_read_at_full_depth(tmp_path):
    values = (np.arange(64).reshape(8, 8) * 1040 + 7).astype(np.uint16)  # 7 … 65527: nearly all above 255
    png16(tmp_path / "deep.png", values)
    gray = load_image(tmp_path / "deep.png", Preprocessing(), ("n", 1, 8, 8))
    np.testing.assert_allclose(gray[0], values / 65535, rtol=1e-6)
    inverted = load_image(tmp_path / "deep.png", Preprocessing(invert=True), ("n", 1, 8, 8))
    np.testing.assert_allclose(inverted[0], 1 - values / 65535, rtol=1e-5, atol=1e-6)
    rgb = load_image(tmp_path / "deep.png", Preprocessing(resize=(4, 4)), ("n", 3, 4, 4))
    box = values.reshape(4, 2, 4, 2).mean(axis=(1, 3)) / 65535  # area averaging at full depth
    for channel in rgb:
        np.testing.assert_allclose(channel, box, rtol=1e-5)


def test_16_bit_colour_pngs_are_scaled_not_clipped(tmp_path):
    values = np.stack([np.full((8, 8), v, np.uint16) for v in (1000, 30000, 65535)], axis=-1)
    png16(tmp_path / "deep_rgb.png", values)
    x = load_image(tmp_path / "deep_rgb.png", Preprocessing(), ("n", 3, 8, 8))
    np.testing.assert_allclose(x[:, 0, 0], [3 / 255, 117 / 255, 1.0], rtol=1e-6)  # Pillow's 8 bits: v >> 8


@pytest.mark.parametrize(
    "array, message",
    [
        (np.ones((2, 4), np.complex64), "complex64, complex numbers"),
        (np.zeros((2,), [("a", "f4", (4,))]), ".*, records \\(a structured dtype\\)"),
        (np.array([["a", "b", "c", "d"]]), "<U1, text"),
    ],
)
def test_arrays_that_are_not_real_numbers_are_refused(single_model, tmp_path, array, message):
    np.save(tmp_path / "odd.npy", array)
    with pytest.raises(ValueError, match=f"odd.npy: an array of dtype {message}"):
        explain_files(single_model("max"), [tmp_path / "odd.npy"], tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.npy"]


@pytest.mark.parametrize(
    "value, dtype", [(np.nan, np.float32), (np.inf, np.float32), (-np.inf, np.float64), (1e300, np.float64)]
)
def test_non_finite_features_are_refused_with_the_file_name(single_model, tmp_path, value, dtype):
    rows = np.ones((5, 4), dtype)
    rows[3, 1] = value
    np.save(tmp_path / "rows.npy", rows)
    with pytest.raises(ValueError, match=r"rows.npy \(sample 3\): holds NaN or Inf"):
        explain_files(single_model("max"), [tmp_path / "rows.npy"], tmp_path / "out", batch_size=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy"]
