"""The largest sizes ``lrpc explain`` takes from a flag or a file, each checked before anything of that size
is allocated, so that a typo (``--batch-size 10000000``) or a hostile file (a PNG that decodes to 900
million pixels, a ``.npy`` header that claims terabytes) ends in one clear error instead of the OOM killer.

====================  ===============================  ==========================================================
limit                 value                            what it bounds
====================  ===============================  ==========================================================
MAX_BATCH_SIZE        100 000                          ``--batch-size`` (``batch_size=``), ``lrpc bench --batch``
MAX_BATCH_BYTES       2 GiB                            one batch of float32 model inputs, as read (bench: as fed)
MAX_SIDE              8192                             ``resize=H,W`` and a model input's height and width
MAX_PICTURE_PIXELS    16 777 216 (4096 × 4096)         a heatmap PNG after its default upscaling
Pillow's limit        Image.MAX_IMAGE_PIXELS (89.5 M)  an image file's pixels, read from its header
MAX_ACTORS            1024                             ``--actors`` (``actors=``)
MAX_THREADS           1024                             onnxruntime threads (``threads=``, ``lrpc bench --threads``)
MAX_TOKEN_JSON_BYTES  16 MiB                           a ``.json`` file of token ids
MAX_TOKEN_IDS         16 777 216                       the token ids of one ``.npy`` file
MAX_VOCABULARY_BYTES  64 MiB                           the ``--tokens`` vocabulary file
====================  ===============================  ==========================================================

``lrpc bench`` adds its own: ``--repeats`` 1–10000 and ``--warmup`` 0–10000 (compiler/bench.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_BATCH_SIZE = 100_000
MAX_BATCH_BYTES = 2 << 30
MAX_SIDE = 8192
MAX_PICTURE_PIXELS = 4096 * 4096
MAX_ACTORS = 1024
MAX_THREADS = 1024
MAX_TOKEN_JSON_BYTES = 16 << 20
MAX_TOKEN_IDS = 1 << 24
MAX_VOCABULARY_BYTES = 64 << 20


def bounded_int(what: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int when it is an integer from ``low`` to ``high``, else ValueError naming ``what``.

    Example::

        >>> bounded_int("--batch-size", 10**12, 1, MAX_BATCH_SIZE)
        Traceback (most recent call last):
        ...
        ValueError: --batch-size must be at most 100000, not 1000000000000
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, not {value!r}")
    if value < low:
        raise ValueError(f"{what} must be at least {low}, not {value}")
    if value > high:
        raise ValueError(f"{what} must be at most {high}, not {value}")
    return int(value)


def size_text(nbytes: float) -> str:
    """Bytes for people: ``2.0 GiB``, ``512 MiB``, ``3 kiB``.

    Example::

        >>> size_text(2 << 30), size_text(768 << 20), size_text(100)
        ('2.0 GiB', '768 MiB', '100 B')
    """
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("kiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(nbytes)} B"


def largest_batch(sample_bytes: int) -> int:
    """How many samples of ``sample_bytes`` fit in MAX_BATCH_BYTES (at least 1).

    Example::

        >>> largest_batch(3 * 224 * 224 * 4)
        3566
    """
    return max(1, MAX_BATCH_BYTES // max(1, sample_bytes))


def batch_bytes_problem(sample_bytes: list[int], what: str = "--batch-size (batch_size)") -> str | None:
    """Why a batch of samples of these sizes is too large to read (None: it is not).

    Example::

        >>> batch_bytes_problem([3 << 30])
        'a batch of 1 sample of 3.0 GiB is 3.0 GiB as float32, more than the 2.0 GiB lrpc explain reads at once'
    """
    total = sum(sample_bytes)
    if total <= MAX_BATCH_BYTES:
        return None
    count, largest = len(sample_bytes), max(sample_bytes)
    each = "" if count == 1 else " each" if len(set(sample_bytes)) == 1 else " at most"
    text = (
        f"a batch of {count} sample{'s' * (count != 1)} of {size_text(largest)}{each} is "
        f"{size_text(total)} as float32, more than the {size_text(MAX_BATCH_BYTES)} lrpc explain reads at once"
    )
    return text if largest > MAX_BATCH_BYTES else f"{text}; lower {what} to {largest_batch(largest)} or less"


def picture_scale(height: int, width: int, wanted: int) -> int:
    """The upscale factor ≤ ``wanted`` that keeps a ``height`` × ``width`` picture within MAX_PICTURE_PIXELS
    (1 when even the picture itself is larger).

    Example::

        >>> picture_scale(8, 8, 16), picture_scale(1, 16000, 128)
        (16, 32)
    """
    room = math.isqrt(MAX_PICTURE_PIXELS // max(1, height * width))
    return max(1, min(wanted, room))
