"""Image preprocessing: the spec an explained file stores in ``lrpc.preprocess``, and applying it.

A spec is ``key=value`` items separated by ``;`` (every key optional)::

    resize=224,224;scale=1/255;mean=0.485,0.456,0.406;std=0.229,0.224,0.225;layout=NCHW

``resize=H,W``      resample the image to H×W pixels (default: the model input's size) — by area
                    averaging when shrinking (an 8×-enlarged 8×8 digit comes back exactly), else bilinear;
                    at most 8192 a side (limits.MAX_SIDE), as for the model input's own size
``scale=S``         multiply the 0–255 pixel values by S (a number or a fraction; default 1/255)
``mean=…``, ``std=…``  per-channel normalization, one value or one per channel (defaults 0 and 1)
``layout=NCHW|NHWC``  where the channels go (default: guessed from the model input's shape)
``color=gray|rgb``  how the image is read (default: 1 channel → gray, 3 → rgb)
``invert=1``        use 255 − p (dark strokes on white paper → light strokes on black)

Pixels p are on the 0–255 scale whatever the file's depth: a 16-bit gray PNG is read at full depth and
mapped by p = v · 255/65535 (so ``scale=1/255`` still gives [0, 1]); 16-bit colour PNGs are read by Pillow
at 8 bits per channel. Each pixel p becomes ``x = ((invert ? 255 − p : p) · scale − mean) / std``. An
image of more pixels than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 million
by default) is refused from its header, before it is decoded.

Example::

    >>> spec = Preprocessing.parse("resize=8,8;scale=1/16;invert=1")
    >>> spec.to_json()
    '{"invert":true,"resize":[8,8],"scale":0.0625}'
    >>> Preprocessing.from_json(spec.to_json()) == spec
    True
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .limits import MAX_SIDE

__all__ = ["Preprocessing", "guess_layout", "image_layout", "image_sample_shape", "load_image"]

LAYOUTS = ("NCHW", "NHWC")
COLORS = {"gray": ("L", 1), "rgb": ("RGB", 3)}
KEYS = ("resize", "scale", "mean", "std", "layout", "color", "invert")
DEFAULT_SCALE = 1 / 255
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I")  # Pillow's modes for 16-bit gray PNGs


def _numbers(key: str, text: str) -> tuple[float, ...]:
    """``"0.5,1/4"`` → (0.5, 0.25); fractions allowed, nothing else."""
    values = []
    for part in text.split(","):
        top, slash, bottom = part.strip().partition("/")
        try:
            values.append(float(top) / float(bottom) if slash else float(top))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"preprocess {key}={text}: {part.strip()!r} is not a number") from None
    return tuple(values)


def _size(text: str) -> tuple[int, int]:
    numbers = _numbers("resize", text)
    if len(numbers) != 2 or any(n != int(n) or n < 1 for n in numbers):
        raise ValueError(f"preprocess resize={text}: give the height and width in pixels, e.g. resize=224,224")
    return int(numbers[0]), int(numbers[1])


def _check_resize(size: Any) -> None:
    """Two whole numbers of pixels, each from 1 to MAX_SIDE (a spec from a file is checked as one given)."""
    text = ",".join(map(str, size)) if isinstance(size, (tuple, list)) else str(size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in size)
    ):
        raise ValueError(f"preprocess resize={text}: give the height and width in pixels, e.g. resize=224,224")
    if max(size) > MAX_SIDE:
        raise ValueError(f"preprocess resize={text}: at most {MAX_SIDE} pixels a side")


def _check_side(size: tuple[int, int], shape: tuple) -> None:
    """Refuse a model input whose own height or width (the default size) is beyond MAX_SIDE."""
    if max(size) > MAX_SIDE:
        raise ValueError(
            f"the model input {list(shape)} asks for {size[0]}×{size[1]} images, more than the "
            f"{MAX_SIDE} pixels a side lrpc explain makes; give resize=H,W or .npy arrays"
        )


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes one model input sample; ``None`` fields take their defaults."""

    resize: tuple[int, int] | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str | None = None
    color: str | None = None
    invert: bool = False

    def __post_init__(self) -> None:
        if self.resize is not None:
            _check_resize(self.resize)
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"preprocess layout={self.layout}: choose NCHW or NHWC")
        if self.color is not None and self.color not in COLORS:
            raise ValueError(f"preprocess color={self.color}: choose gray or rgb")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("preprocess std: a standard deviation of 0 divides by zero")

    @classmethod
    def parse(cls, text: str) -> Preprocessing:
        """Read ``key=value;…`` (see the module docstring)."""
        given: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(";"))):
            key, eq, value = (s.strip() for s in item.partition("="))
            if key not in KEYS or not eq or not value:
                raise ValueError(
                    f"preprocess: {item!r} is not KEY=VALUE with KEY one of {', '.join(KEYS)} "
                    "(e.g. 'resize=224,224;mean=0.485,0.456,0.406;std=0.229,0.224,0.225')"
                )
            if key in given:
                raise ValueError(f"preprocess: {key} is given twice")
            given[key] = value
        return cls(
            resize=_size(given["resize"]) if "resize" in given else None,
            scale=_scalar(given["scale"]) if "scale" in given else None,
            mean=_numbers("mean", given["mean"]) if "mean" in given else None,
            std=_numbers("std", given["std"]) if "std" in given else None,
            layout=given["layout"].upper() if "layout" in given else None,
            color=given["color"].lower() if "color" in given else None,
            invert=_flag(given.get("invert", "0")),
        )

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        """The inverse of :meth:`to_json` (what ``lrpc.preprocess`` holds)."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"lrpc.preprocess is not valid JSON ({err})") from None
        if not isinstance(value, dict) or set(value) - set(KEYS):
            raise ValueError(f"lrpc.preprocess must be a JSON object with keys among {', '.join(KEYS)}, got {text!r}")
        tuples = {k: tuple(v) for k, v in value.items() if isinstance(v, list)}
        try:
            return cls(**{**value, **tuples})
        except ValueError as err:
            raise ValueError(f"the file's lrpc.preprocess: {err}") from None

    def to_json(self) -> str:
        """Compact, key-sorted JSON of the fields that were given (deterministic bytes)."""
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        given = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in given.items()
            if v is not None and not (k == "invert" and not v)
        }
        return json.dumps(given, sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        """One line for people, e.g. ``resize 8×8, scale 0.0625, invert``."""
        parts = [f"resize {self.resize[0]}×{self.resize[1]}"] if self.resize else []
        parts += [
            f"{k} {_fmt(getattr(self, k))}"
            for k in ("scale", "mean", "std", "layout", "color")
            if getattr(self, k) is not None
        ]
        return ", ".join(parts + (["invert"] if self.invert else [])) or "defaults"


def _scalar(text: str) -> float:
    numbers = _numbers("scale", text)
    if len(numbers) != 1:
        raise ValueError(f"preprocess scale={text}: give one number, e.g. scale=1/255")
    return numbers[0]


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"preprocess invert={text}: give 1 or 0")


def _fmt(value: Any) -> str:
    return (
        ",".join(f"{v:g}" for v in value)
        if isinstance(value, tuple)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def guess_layout(shape: tuple) -> str:
    """NHWC when only the last axis of a rank-4 shape looks like channels (1 or 3), else NCHW.

    Example::

        >>> guess_layout(("n", 224, 224, 3)), guess_layout(("n", 2, 8, 8))
        ('NHWC', 'NCHW')
    """
    return "NHWC" if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"


def image_layout(shape: tuple, layout: str | None = None) -> tuple[str, int, tuple[int | None, int | None]]:
    """(layout, channels, (H, W)) of a model input of ``shape`` [batch, …]; H/W None when dynamic.

    Example::

        >>> image_layout(("batch", 1, 8, 8))
        ('NCHW', 1, (8, 8))
    """
    if len(shape) != 4:
        raise ValueError(
            f"the model input has shape {list(shape)}; images need a [batch, C, H, W] or "
            "[batch, H, W, C] input (give .npy arrays instead)"
        )
    layout = layout or guess_layout(shape)
    channels, height, width = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    if channels not in (1, 3):
        raise ValueError(
            f"the model input has shape {list(shape)}: {channels} channels in layout {layout}; "
            "images give 1 (gray) or 3 (rgb); set layout= in the preprocessing spec"
        )
    dim = lambda d: d if isinstance(d, int) and d > 0 else None
    return layout, channels, (dim(height), dim(width))


def _per_channel(values: tuple[float, ...] | None, default: float, channels: int, key: str) -> np.ndarray:
    if values is None:
        return np.full(channels, default)
    if len(values) not in (1, channels):
        raise ValueError(f"preprocess {key}: {len(values)} values for a {channels}-channel input")
    return np.broadcast_to(np.asarray(values, np.float64), (channels,))


def _readable(image, channels: int) -> tuple[Any, int]:
    """(the image in a mode to resize, its largest pixel value): 16-bit gray as 32-bit floats, full depth
    (three equal channels for an RGB model, after resizing); else 8-bit L or RGB."""
    if image.mode in WIDE_MODES:
        return image.convert("F"), 65535
    return image.convert("L" if channels == 1 else "RGB"), 255


def _target(spec: Preprocessing, shape: tuple) -> tuple[str, int, tuple[int, int]]:
    """(layout, channels, (H, W)) an image becomes for a model input of ``shape`` under ``spec``."""
    layout, channels, (height, width) = image_layout(shape, spec.layout)
    size = spec.resize or (height, width)
    if None in size:
        raise ValueError(f"the model input {list(shape)} has no fixed height and width: give resize=H,W")
    _check_side(size, shape)
    if spec.color is not None and COLORS[spec.color][1] != channels:
        raise ValueError(
            f"preprocess color={spec.color} gives {COLORS[spec.color][1]} channel(s); the model input has {channels}"
        )
    return layout, channels, size


def image_sample_shape(spec: Preprocessing, shape: tuple) -> tuple[int, int, int]:
    """The shape of one image sample (no batch axis) that :func:`load_image` makes, read from nothing.

    Example::

        >>> image_sample_shape(Preprocessing(resize=(32, 48)), ("batch", 32, 48, 3))
        (32, 48, 3)
    """
    layout, channels, (height, width) = _target(spec, shape)
    return (channels, height, width) if layout == "NCHW" else (height, width, channels)


def _open_image(path: str | os.PathLike):
    """Pillow's image, opened (header only) when its pixels are within Pillow's decompression-bomb limit,
    ``PIL.Image.MAX_IMAGE_PIXELS``: past it Pillow warns, past twice it refuses; here both are one error."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            found = re.search(r"\((\d+) pixels\)", str(err))
            pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
            raise ValueError(
                f"{os.fspath(path)}: an image of {pixels}, more than the "
                f"{Image.MAX_IMAGE_PIXELS:,} lrpc explain decodes (Pillow's decompression-bomb limit, "
                "PIL.Image.MAX_IMAGE_PIXELS); shrink it first"
            ) from None


def load_image(path: str | os.PathLike, spec: Preprocessing, shape: tuple) -> np.ndarray:
    """One image file as a float32 model input sample (no batch axis) for an input of ``shape``.

    Example::

        >>> load_image("seven.png", Preprocessing(), ("batch", 1, 8, 8)).shape  # doctest: +SKIP
        (1, 8, 8)
    """
    from PIL import Image, UnidentifiedImageError

    layout, channels, size = _target(spec, shape)
    try:
        with _open_image(path) as image:
            picture, depth = _readable(image, channels)
            shrink = picture.height >= size[0] and picture.width >= size[1]
            picture = picture.resize((size[1], size[0]), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{os.fspath(path)}: cannot read the image ({err})") from None
    pixels = np.asarray(picture, np.float64) * (255 / depth)
    pixels = np.broadcast_to(pixels.reshape(size[0], size[1], -1), (size[0], size[1], channels))
    if spec.invert:
        pixels = 255.0 - pixels
    mean = _per_channel(spec.mean, 0.0, channels, "mean")
    std = _per_channel(spec.std, 1.0, channels, "std")
    x = (pixels * (DEFAULT_SCALE if spec.scale is None else spec.scale) - mean) / std
    return np.ascontiguousarray(np.moveaxis(x, -1, 0) if layout == "NCHW" else x, dtype=np.float32)
