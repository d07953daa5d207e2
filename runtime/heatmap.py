"""Render relevance maps as RGB images and PNG files.

The colormap is diverging and centred on zero with symmetric scaling: with
``m = max|R|``, ``-m`` is pure blue, ``0`` white and ``+m`` pure red
(``"bwr"``); ``"gray"`` maps ``-m`` to black, ``0`` to mid-grey and ``+m``
to white. Pillow is imported only inside :func:`save_heatmap`.

Example::

    >>> heatmap(np.array([[-1.0, 0.0, 2.0]]))[0].tolist()
    [[128, 128, 255], [255, 255, 255], [255, 0, 0]]
"""

from __future__ import annotations

import math
import os
from typing import IO, Any, Union

import numpy as np

from .limits import MAX_PICTURE_PIXELS, picture_scale

__all__ = ["heatmap", "save_heatmap"]

CMAPS = ("bwr", "gray")
MIN_SIDE = 128  # default upscaling makes the smaller side at least this many pixels

PathOrFile = Union[str, os.PathLike, IO[bytes]]


def _to_2d(array: Any, channel_axis: int, what: str) -> np.ndarray:
    """Return a 2D float64 map: 2D as is, 3D summed over ``channel_axis``."""
    values = np.asarray(array, dtype=np.float64)
    if values.ndim == 2:
        return values
    if values.ndim == 3:
        return values.sum(axis=channel_axis)
    hint = " (pass one sample, e.g. relevance[0])" if values.ndim == 4 else ""
    raise ValueError(f"{what} must be 2D [H, W] or 3D with a channel axis, got shape {list(values.shape)}{hint}")


def _colorize(t: np.ndarray, cmap: str) -> np.ndarray:
    """Map values in [-1, 1] to RGB floats in [0, 1], shape [H, W, 3]."""
    if cmap == "bwr":
        neg = np.clip(-t, 0.0, 1.0)
        pos = np.clip(t, 0.0, 1.0)
        return np.stack([1.0 - neg, 1.0 - neg - pos, 1.0 - pos], axis=-1)
    if cmap == "gray":
        level = (np.clip(t, -1.0, 1.0) + 1.0) / 2.0
        return np.repeat(level[..., None], 3, axis=-1)
    raise ValueError(f"unknown cmap {cmap!r}; choose one of {CMAPS}")


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Convert RGB floats in [0, 1] to uint8."""
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _heat_float(relevance: Any, channel_axis: int, cmap: str) -> np.ndarray:
    """The heatmap as RGB floats in [0, 1]."""
    r = _to_2d(relevance, channel_axis, "relevance")
    if not np.isfinite(r).all():
        raise ValueError("relevance contains NaN or infinite values")
    m = float(np.abs(r).max()) if r.size else 0.0
    t = r / m if m > 0 else np.zeros_like(r)
    return _colorize(t, cmap)


def heatmap(relevance: Any, *, channel_axis: int = 0, cmap: str = "bwr") -> np.ndarray:
    """Return an RGB uint8 image [H, W, 3] of a relevance map.

    ``relevance`` is [H, W], or [C, H, W] (``channel_axis=0``) / [H, W, C]
    (``channel_axis=-1``), summed over the channels. Zero maps to white,
    ``±max|R|`` to pure red/blue; an all-zero map is all white.

    Example::

        >>> img = heatmap(np.zeros((3, 8, 8)))
        >>> img.shape, img.dtype, int(img.min())
        ((8, 8, 3), dtype('uint8'), 255)
    """
    return _to_uint8(_heat_float(relevance, channel_axis, cmap))


def _image_rgb(image: Any, channel_axis: int) -> np.ndarray:
    """Normalize an input image (2D, or 1/3 channels) to RGB floats in [0, 1]."""
    values = np.asarray(image, dtype=np.float64)
    if values.ndim == 3:
        values = np.moveaxis(values, channel_axis, -1)
        if values.shape[-1] == 1:
            values = values[..., 0]
        elif values.shape[-1] != 3:
            raise ValueError(
                f"image must have 1 or 3 channels on axis {channel_axis}, got shape {list(np.asarray(image).shape)}"
            )
    elif values.ndim != 2:
        raise ValueError(f"image must be 2D or 3D, got shape {list(values.shape)}")
    if not np.isfinite(values).all():
        raise ValueError("image contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=-1)
    return values


def _compose(
    relevance: Any,
    image: Any,
    overlay_alpha: float,
    side_by_side: bool,
    scale: int | None,
    channel_axis: int,
    cmap: str,
) -> np.ndarray:
    """Build the final uint8 RGB picture written by :func:`save_heatmap`."""
    heat = _heat_float(relevance, channel_axis, cmap)
    if image is None:
        if side_by_side:
            raise ValueError("side_by_side=True needs an image")
        picture = heat
    else:
        rgb = _image_rgb(image, channel_axis)
        if rgb.shape != heat.shape:
            raise ValueError(
                f"image is {rgb.shape[0]}x{rgb.shape[1]} but the relevance map is {heat.shape[0]}x{heat.shape[1]}"
            )
        if side_by_side:
            picture = np.concatenate([rgb, heat], axis=1)
        else:
            if not 0.0 <= overlay_alpha <= 1.0:
                raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
            picture = (1.0 - overlay_alpha) * rgb + overlay_alpha * heat
    scale = _scale(scale, *picture.shape[:2])
    return np.repeat(np.repeat(_to_uint8(picture), scale, axis=0), scale, axis=1)


def _scale(scale: int | None, height: int, width: int) -> int:
    """The upscale factor: ``scale`` if given (the result within limits.MAX_PICTURE_PIXELS), else enough for
    a short side of MIN_SIDE pixels, held to MAX_PICTURE_PIXELS (a [1, 16000] signal: 32, not 128)."""
    if scale is None:
        return picture_scale(height, width, max(1, math.ceil(MIN_SIDE / max(1, min(height, width)))))
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if scale > 1 and height * width * scale * scale > MAX_PICTURE_PIXELS:
        raise ValueError(
            f"scale={scale} makes a {height * scale}×{width * scale} picture, more than {MAX_PICTURE_PIXELS:,} pixels"
        )
    return int(scale)


def save_heatmap(
    path: PathOrFile,
    relevance: Any,
    *,
    image: Any = None,
    overlay_alpha: float = 0.5,
    side_by_side: bool = False,
    scale: int | None = None,
    channel_axis: int = 0,
    cmap: str = "bwr",
) -> None:
    """Write a relevance heatmap as a PNG to ``path`` (a path or a binary file).

    ``image`` (optional, 2D or 1/3 channels on ``channel_axis``, any range;
    min/max normalized) is blended under the heatmap with ``overlay_alpha``
    (the heatmap's weight), or placed left of it when ``side_by_side``.
    ``scale`` is an integer nearest-neighbour upscale factor; by default the
    smaller side becomes at least 128 px (an 8x8 map gets scale 16), as far as
    the picture stays within 4096 × 4096 pixels (a 1 × 16000 map gets 32).

    Example::

        >>> import io
        >>> buf = io.BytesIO()
        >>> save_heatmap(buf, np.eye(8), image=np.ones((8, 8)), side_by_side=True)
        >>> buf.getvalue()[:4]
        b'\\x89PNG'
    """
    picture = _compose(relevance, image, overlay_alpha, side_by_side, scale, channel_axis, cmap)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency of lrpc
        raise ImportError("save_heatmap needs Pillow: pip install pillow") from None
    target = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    Image.fromarray(picture, mode="RGB").save(target, format="PNG")
