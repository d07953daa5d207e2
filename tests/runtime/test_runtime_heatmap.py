"""heatmap colours and save_heatmap PNG output."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lrpc_runtime import heatmap, save_heatmap

BLUE, WHITE, RED = [0, 0, 255], [255, 255, 255], [255, 0, 0]


def test_colors_at_minus_m_zero_plus_m():
    img = heatmap(np.array([[-3.0, 0.0, 3.0, 1.5]]))
    assert img.shape == (1, 4, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == BLUE
    assert img[0, 1].tolist() == WHITE
    assert img[0, 2].tolist() == RED
    assert img[0, 3].tolist() == [255, 128, 128]  # half way to red


def test_symmetric_scaling_uses_max_abs():
    img = heatmap(np.array([[1.0, -4.0]]))
    assert img[0, 1].tolist() == BLUE  # -4 is -max|R|
    assert img[0, 0].tolist() == [255, 191, 191]  # +1 is a quarter of the way to red


def test_all_zero_is_white():
    img = heatmap(np.zeros((5, 6)))
    assert img.shape == (5, 6, 3)
    assert (img == 255).all()


def test_channels_are_summed():
    chw = np.zeros((3, 2, 2))
    chw[0, 0, 0], chw[1, 0, 0], chw[2, 1, 1] = 1.0, 1.0, -2.0
    img = heatmap(chw)
    assert img[0, 0].tolist() == RED and img[1, 1].tolist() == BLUE
    np.testing.assert_array_equal(heatmap(np.moveaxis(chw, 0, -1), channel_axis=-1), img)


def test_gray_cmap_and_errors():
    img = heatmap(np.array([[-1.0, 0.0, 1.0]]), cmap="gray")
    assert img[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="unknown cmap"):
        heatmap(np.ones((2, 2)), cmap="jet")
    with pytest.raises(ValueError, match="one sample"):
        heatmap(np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        heatmap(np.array([[np.nan, 1.0]]))


def _read(path_or_buf) -> Image.Image:
    img = Image.open(path_or_buf)
    img.load()
    return img


def test_save_default_scale(tmp_path):
    path = tmp_path / "r.png"
    save_heatmap(path, np.eye(8) - 0.5)
    img = _read(path)
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.size == (128, 128)  # 8x8 digit -> scale 16
    pixels = np.asarray(img)
    assert pixels[0, 0].tolist() == RED and pixels[0, 127].tolist() == BLUE


def test_save_explicit_scale_and_chw(tmp_path):
    path = tmp_path / "r.png"
    save_heatmap(str(path), np.ones((3, 10, 20)), scale=2)
    assert _read(path).size == (40, 20)  # (width, height)
    save_heatmap(path, np.ones((200, 300)))
    assert _read(path).size == (300, 200)  # already large: scale 1


def test_save_overlay(tmp_path):
    path = tmp_path / "o.png"
    image = np.full((8, 8), 7.0)
    image[0, 0] = 10.0  # min/max normalised: this pixel white, the rest black
    relevance = np.zeros((8, 8))
    relevance[0, 1] = 1.0
    save_heatmap(path, relevance, image=image, overlay_alpha=0.5, scale=1)
    pixels = np.asarray(_read(path))
    assert pixels.shape == (8, 8, 3)
    assert pixels[0, 0].tolist() == WHITE  # white image under white heat
    assert pixels[0, 1].tolist() == [128, 0, 0]  # black image, red heat, alpha 0.5
    assert pixels[5, 5].tolist() == [128, 128, 128]  # black image, white heat


def test_save_side_by_side_to_buffer():
    buf = io.BytesIO()
    image = np.random.default_rng(0).random((3, 8, 8))  # colour image, channels first
    save_heatmap(buf, np.ones((8, 8)), image=image, side_by_side=True)
    buf.seek(0)
    img = _read(buf)
    assert img.size == (256, 128)
    pixels = np.asarray(img)
    assert (pixels[:, 128:] == np.array(RED, dtype=np.uint8)).all()


def test_save_errors(tmp_path):
    path = tmp_path / "x.png"
    with pytest.raises(ValueError, match="needs an image"):
        save_heatmap(path, np.ones((4, 4)), side_by_side=True)
    with pytest.raises(ValueError, match="relevance map is 4x4"):
        save_heatmap(path, np.ones((4, 4)), image=np.ones((5, 5)))
    with pytest.raises(ValueError, match="scale"):
        save_heatmap(path, np.ones((4, 4)), scale=0)
    with pytest.raises(ValueError, match="overlay_alpha"):
        save_heatmap(path, np.ones((4, 4)), image=np.ones((4, 4)), overlay_alpha=2.0)
    assert not path.exists()
