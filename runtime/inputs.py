"""The samples behind ``lrpc explain INPUTS...``: image files, ``.npy`` arrays, and folders of them.

An image (PNG, JPEG, BMP) is one sample, read through a :class:`~lrpc_runtime.preprocess.Preprocessing`.
A ``.npy`` array is one sample when it has the model input's rank minus one (no batch axis), else a
batch of samples along axis 0. A folder contributes its images and ``.npy`` files (not its
subfolders), in name order. Every sample gets a unique name for its output files: the file's stem,
``stem_3`` for sample 3 of a batch array; a name already taken by an earlier sample (compared without
case, as on case-insensitive file systems) gets the first free ``-2``, ``-3``… (``a-2.png``, ``a.jpg``,
``a.png`` → ``a-2``, ``a``, ``a-3``); the table's ``source`` column names each sample's file.
Arrays must hold real numbers (bool, integer or float: complex or structured dtypes are refused),
and every sample must be finite. Sizes are checked from the arrays' headers and the images' target size
before any sample is read: an array's samples must fit the model input's fixed sizes, and one batch of
float32 samples may take at most 2 GiB (:mod:`lrpc_runtime.limits`).

Example::

    >>> refs = collect(["digits/"], input_rank=4)          # doctest: +SKIP
    >>> batch = load_samples(refs[:32], Preprocessing(), ("batch", 1, 8, 8))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .limits import batch_bytes_problem, size_text
from .preprocess import Preprocessing, image_sample_shape, load_image

__all__ = ["IMAGE_SUFFIXES", "SampleRef", "check_batch_size", "collect", "load_samples", "open_array"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ARRAY_SUFFIX = ".npy"


@dataclass(frozen=True)
class SampleRef:
    """Where one sample comes from: a file, and its index along axis 0 for a batch array."""

    name: str
    source: str
    index: int | None = None  # None: the whole file is one sample

    @property
    def is_image(self) -> bool:
        return Path(self.source).suffix.lower() in IMAGE_SUFFIXES


def _files(path: Path) -> list[Path]:
    """The input files a command-line argument names (a folder's in name order)."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, ARRAY_SUFFIX))
        if not found:
            raise ValueError(f"{path}: the folder has no images ({', '.join(IMAGE_SUFFIXES)}) or .npy files")
        return found
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder")
    if path.suffix.lower() not in (*IMAGE_SUFFIXES, ARRAY_SUFFIX):
        raise ValueError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy array")
    return [path]


def open_array(path: Path | str, what: str = "the array", label: str | None = None) -> np.ndarray:
    """The array in ``path``, mapped, not read: its header says its shape (checked against the file's size).
    A file that cannot be mapped is a ValueError ``LABEL: cannot read WHAT (why)``, LABEL the path by default."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{label or path}: cannot read {what} ({_claim(path) or err})") from None


def _claim(path: Path | str) -> str | None:
    """What a .npy header claims that its file does not hold (None: not that)."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            start = f.tell()
        claimed, held = math.prod(shape) * dtype.itemsize, os.path.getsize(path) - start
    except (OSError, ValueError, TypeError):
        return None
    if claimed <= held:
        return None
    return f"its header claims {dtype} of shape {list(shape)}, {size_text(claimed)}; the file holds {size_text(held)}"


def _array_count(path: Path, input_rank: int, sample_dims: Sequence | None = None) -> int | None:
    """None for one sample, else the batch size of the array in ``path``; its samples must fit the fixed
    sizes among ``sample_dims`` (the model input's dims after the batch axis), checked before any is read."""
    array = open_array(path)
    _check_dtype(path, array.dtype)
    if array.ndim == input_rank - 1:
        count, sample = None, array.shape
    elif array.ndim == input_rank and array.shape[0] > 0:
        count, sample = int(array.shape[0]), array.shape[1:]
    else:
        raise ValueError(
            f"{path}: shape {list(array.shape)}; the model input has rank {input_rank}, so give one "
            f"sample of rank {input_rank - 1} or a batch of rank {input_rank}"
        )
    if sample_dims is not None and any(isinstance(d, int) and d > 0 and d != n for d, n in zip(sample_dims, sample)):
        raise ValueError(
            f"{path}: samples of shape {list(sample)}; the model input takes {list(sample_dims)} after the batch axis"
        )
    return count


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    """Refuse arrays that are not real numbers (a complex one would lose its imaginary part)."""
    if dtype.kind in "biuf" and dtype.fields is None:
        return
    what = {
        "c": "complex numbers (the imaginary part would be lost)",
        "V": "records (a structured dtype)",
        "U": "text",
        "S": "bytes",
        "M": "dates",
        "m": "time spans",
        "O": "Python objects",
    }.get(dtype.kind, "")
    raise ValueError(
        f"{path}: an array of dtype {dtype}{', ' + what if what else ''}; lrpc explain takes "
        "arrays of real numbers (bool, integer or float)"
    )


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``… the first not taken (case-insensitively); marks it taken."""
    candidate, count = name, 1
    while candidate.casefold() in taken:
        count += 1
        candidate = f"{name}-{count}"
    taken.add(candidate.casefold())
    return candidate


def collect(
    paths: Sequence[str | os.PathLike], input_rank: int, sample_dims: Sequence | None = None
) -> list[SampleRef]:
    """Every sample the files and folders in ``paths`` hold, in order, with unique names; with ``sample_dims``
    (the model input's shape after the batch axis), arrays whose samples do not fit it are refused."""
    if not paths:
        raise ValueError("give at least one image, .npy file or folder to explain")
    refs: list[SampleRef] = []
    seen: set[str] = set()
    for path in (Path(p) for p in paths):
        for file in _files(path):
            count = None if file.suffix.lower() in IMAGE_SUFFIXES else _array_count(file, input_rank, sample_dims)
            if count is None:
                refs.append(SampleRef(_unique(file.stem, seen), str(file)))
                continue
            width = len(str(count - 1))
            refs += [SampleRef(_unique(f"{file.stem}_{i:0{width}d}", seen), str(file), i) for i in range(count)]
    return refs


def _sample_shape(ref: SampleRef, arrays: dict[str, np.ndarray], spec: Preprocessing, shape: tuple) -> tuple:
    if ref.is_image:
        return image_sample_shape(spec, shape)
    array = arrays[ref.source]
    return array.shape if ref.index is None else array.shape[1:]


def check_batch_size(
    refs: Sequence[SampleRef], spec: Preprocessing, shape: tuple, arrays: dict[str, np.ndarray] | None = None
) -> None:
    """Refuse a batch whose float32 samples would pass limits.MAX_BATCH_BYTES, from the arrays' headers and
    the images' target size, before any sample is read (ValueError naming --batch-size)."""
    arrays = arrays if arrays is not None else {r.source: open_array(r.source) for r in refs if not r.is_image}
    sizes = [4 * math.prod(_sample_shape(ref, arrays, spec, shape)) for ref in refs]
    problem = batch_bytes_problem(sizes)
    if problem is not None:
        raise ValueError(problem)


def load_samples(refs: Sequence[SampleRef], spec: Preprocessing, shape: tuple) -> np.ndarray:
    """The samples of ``refs`` stacked into one float32 batch for an input of ``shape`` (check_batch_size
    first)."""
    arrays = {ref.source: open_array(ref.source) for ref in refs if not ref.is_image}
    check_batch_size(refs, spec, shape, arrays)
    samples = []
    for ref in refs:
        if ref.is_image:
            samples.append(load_image(ref.source, spec, shape))
            continue
        array = arrays[ref.source]
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become Inf: refused below
            samples.append(np.asarray(array if ref.index is None else array[ref.index], np.float32))
    first = samples[0].shape
    odd = next((r for r, s in zip(refs, samples) if s.shape != first), None)
    if odd is not None:
        raise ValueError(
            f"{odd.source}: a sample of shape {list(samples[refs.index(odd)].shape)}, but "
            f"{refs[0].source} gave {list(first)}; one batch needs one shape"
        )
    bad = next((r for r, s in zip(refs, samples) if not np.isfinite(s).all()), None)
    if bad is not None:
        where = "" if bad.index is None else f" (sample {bad.index})"
        raise ValueError(
            f"{bad.source}{where}: holds NaN or Inf (or values beyond float32's range); "
            "lrpc explains finite inputs only"
        )
    return np.stack(samples)
