"""The samples behind ``lrpc explain INPUTS...``: image files, ``.npy`` arrays, and folders of them.

An image (PNG, JPEG, BMP) is one sample, read through a :class:`~lrpc_runtime.preprocess.Preprocessing`.
A ``.npy`` array is one sample when it has the model input's rank minus one (no batch axis), else a
batch of samples along axis 0. A folder contributes its images and ``.npy`` files (not its
subfolders), in name order. Every sample gets a unique name for its output files: the file's stem,
``stem_3`` for sample 3 of a batch array; a name already taken by an earlier sample (compared without
case, as on case-insensitive file systems) gets the first free ``-2``, ``-3``… (``a-2.png``, ``a.jpg``,
``a.png`` → ``a-2``, ``a``, ``a-3``); the table's ``source`` column names each sample's file.
Arrays must hold real numbers (bool, integer or float: complex or structured dtypes are refused),
and every sample must be finite.

Example::

    >>> refs = collect(["digits/"], input_rank=4)          # doctest: +SKIP
    >>> batch = load_samples(refs[:32], Preprocessing(), ("batch", 1, 8, 8))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .preprocess import Preprocessing, load_image

__all__ = ["IMAGE_SUFFIXES", "SampleRef", "collect", "load_samples"]

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
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, ARRAY_SUFFIX))
        if not found:
            raise ValueError(f"{path}: the folder has no images ({', '.join(IMAGE_SUFFIXES)}) or .npy files")
        return found
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder")
    if path.suffix.lower() not in (*IMAGE_SUFFIXES, ARRAY_SUFFIX):
        raise ValueError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy array")
    return [path]


def _array_count(path: Path, input_rank: int) -> int | None:
    """None for one sample, else the batch size of the array in ``path``."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the array ({err})") from None
    _check_dtype(path, array.dtype)
    if array.ndim == input_rank - 1:
        return None
    if array.ndim == input_rank and array.shape[0] > 0:
        return int(array.shape[0])
    raise ValueError(f"{path}: shape {list(array.shape)}; the model input has rank {input_rank}, so give one "
                     f"sample of rank {input_rank - 1} or a batch of rank {input_rank}")


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    """Refuse arrays that are not real numbers (a complex one would lose its imaginary part)."""
    if dtype.kind in "biuf" and dtype.fields is None:
        return
    what = {"c": "complex numbers (the imaginary part would be lost)", "V": "records (a structured dtype)",
            "U": "text", "S": "bytes", "M": "dates", "m": "time spans", "O": "Python objects"}.get(dtype.kind, "")
    raise ValueError(f"{path}: an array of dtype {dtype}{', ' + what if what else ''}; lrpc explain takes "
                     "arrays of real numbers (bool, integer or float)")


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``… the first not taken (case-insensitively); marks it taken."""
    candidate, count = name, 1
    while candidate.casefold() in taken:
        count += 1
        candidate = f"{name}-{count}"
    taken.add(candidate.casefold())
    return candidate


def collect(paths: Sequence[str | os.PathLike], input_rank: int) -> list[SampleRef]:
    """Every sample the files and folders in ``paths`` hold, in order, with unique names."""
    if not paths:
        raise ValueError("give at least one image, .npy file or folder to explain")
    refs: list[SampleRef] = []
    seen: set[str] = set()
    for path in (Path(p) for p in paths):
        for file in _files(path):
            count = None if file.suffix.lower() in IMAGE_SUFFIXES else _array_count(file, input_rank)
            if count is None:
                refs.append(SampleRef(_unique(file.stem, seen), str(file)))
                continue
            width = len(str(count - 1))
            refs += [SampleRef(_unique(f"{file.stem}_{i:0{width}d}", seen), str(file), i) for i in range(count)]
    return refs


def load_samples(refs: Sequence[SampleRef], spec: Preprocessing, shape: tuple) -> np.ndarray:
    """The samples of ``refs`` stacked into one float32 batch for an input of ``shape``."""
    arrays: dict[str, np.ndarray] = {}
    samples = []
    for ref in refs:
        if ref.is_image:
            samples.append(load_image(ref.source, spec, shape))
            continue
        if ref.source not in arrays:
            arrays[ref.source] = np.load(ref.source, mmap_mode="r", allow_pickle=False)
        array = arrays[ref.source]
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become Inf: refused below
            samples.append(np.asarray(array if ref.index is None else array[ref.index], np.float32))
    first = samples[0].shape
    odd = next((r for r, s in zip(refs, samples) if s.shape != first), None)
    if odd is not None:
        raise ValueError(f"{odd.source}: a sample of shape {list(samples[refs.index(odd)].shape)}, but "
                         f"{refs[0].source} gave {list(first)}; one batch needs one shape")
    bad = next((r for r, s in zip(refs, samples) if not np.isfinite(s).all()), None)
    if bad is not None:
        where = "" if bad.index is None else f" (sample {bad.index})"
        raise ValueError(f"{bad.source}{where}: holds NaN or Inf (or values beyond float32's range); "
                         "lrpc explains finite inputs only")
    return np.stack(samples)
