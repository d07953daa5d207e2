"""Validate user inputs and targets and turn them into onnxruntime feeds.

Everything here is pure numpy; :class:`lrpc_runtime.Explainer` calls it with
the input signature read from the session.

Example::

    >>> spec = InputSpec("input", ("N", 4), np.dtype(np.float32))
    >>> arrays = prepare_inputs(np.zeros((2, 4)), {"input": spec})
    >>> arrays["input"].dtype, batch_size_of(arrays)
    (dtype('float32'), 2)
    >>> prepare_target(1, 2, "input").tolist()
    [1, 1]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "InputSpec",
    "ort_dtype",
    "prepare_inputs",
    "batch_size_of",
    "prepare_target",
    "TARGET_HINT",
]

# onnxruntime type strings -> numpy dtypes (types numpy cannot hold are absent).
_ORT_DTYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}

TARGET_HINT = "`lrpc compile --target input` makes the target choosable per call"


def ort_dtype(type_string: str) -> np.dtype | None:
    """Map an onnxruntime type string to a numpy dtype (``None`` if unknown).

    Example::

        >>> ort_dtype("tensor(float)")
        dtype('float32')
    """
    found = _ORT_DTYPES.get(type_string)
    return None if found is None else np.dtype(found)


@dataclass(frozen=True)
class InputSpec:
    """Name, shape (ints for fixed dims, str/None for free ones) and dtype of a graph input.

    Example::

        >>> InputSpec("x", (1, 3), np.dtype("float32")).static_batch
        1
    """

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype | None

    @property
    def static_batch(self) -> int | None:
        """The fixed size of axis 0, or ``None`` when the batch axis is free."""
        if self.shape and isinstance(self.shape[0], int) and self.shape[0] > 0:
            return self.shape[0]
        return None


def _cast(name: str, array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """Cast ``array`` to the dtype the session expects, refusing lossy casts."""
    if dtype is None or array.dtype == dtype:
        return np.ascontiguousarray(array)
    kind = array.dtype.kind
    if dtype.kind == "f" and kind in "fiub":
        return np.ascontiguousarray(array.astype(dtype))
    if dtype.kind in "iu" and kind in "iub":
        return np.ascontiguousarray(array.astype(dtype))
    if dtype.kind == "b" and kind == "b":
        return np.ascontiguousarray(array)
    raise ValueError(
        f"input {name!r}: the model expects {dtype} values, got an array of "
        f"dtype {array.dtype} that cannot be converted safely"
    )


def _check_shape(spec: InputSpec, array: np.ndarray) -> None:
    """Check rank and fixed non-batch dims of ``array`` against ``spec``."""
    if not spec.shape and array.ndim == 0:
        return
    if array.ndim != len(spec.shape):
        hint = ""
        if array.ndim == len(spec.shape) - 1:
            hint = " (a single sample? add the batch axis, e.g. x[None])"
        raise ValueError(
            f"input {spec.name!r}: expected {len(spec.shape)} dimensions "
            f"{list(spec.shape)}, got shape {list(array.shape)}{hint}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if axis > 0 and isinstance(want, int) and want >= 0 and want != got:
            raise ValueError(
                f"input {spec.name!r}: axis {axis} must have size {want} "
                f"(model shape {list(spec.shape)}), got shape {list(array.shape)}"
            )


def prepare_inputs(x: Any, specs: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
    """Turn one array or a ``{name: array}`` dict into checked, cast arrays.

    Raises ``ValueError`` for missing or unknown names, a bare array given to
    a multi-input model, wrong ranks/dims and unconvertible dtypes.

    Example::

        >>> specs = {"a": InputSpec("a", ("N",), np.dtype("float32"))}
        >>> prepare_inputs({"a": [1.0, 2.0]}, specs)["a"]
        array([1., 2.], dtype=float32)
    """
    names = list(specs)
    if isinstance(x, Mapping):
        unknown = [k for k in x if k not in specs]
        missing = [k for k in names if k not in x]
        if unknown or missing:
            parts = []
            if missing:
                parts.append(f"missing inputs {missing}")
            if unknown:
                parts.append(f"unknown inputs {unknown}")
            raise ValueError(f"{'; '.join(parts)}; the model's inputs are {names}")
        given = dict(x)
    else:
        if len(names) != 1:
            raise ValueError(
                f"the model has {len(names)} inputs {names}; pass a dict "
                "{input name: array} instead of a single array"
            )
        given = {names[0]: x}
    result: dict[str, np.ndarray] = {}
    for name in names:
        try:
            array = np.asarray(given[name])
        except (TypeError, ValueError) as err:
            raise ValueError(f"input {name!r} is not array-like: {err}") from None
        _check_shape(specs[name], array)
        result[name] = _cast(name, array, specs[name].dtype)
    return result


def batch_size_of(arrays: Mapping[str, np.ndarray]) -> int:
    """Return the common size of axis 0 of all arrays (``ValueError`` if they differ).

    Example::

        >>> batch_size_of({"a": np.zeros((3, 2)), "b": np.zeros((3,))})
        3
    """
    sizes = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
    if any(size is None for size in sizes.values()):
        scalars = [name for name, size in sizes.items() if size is None]
        raise ValueError(f"inputs {scalars} are scalars; every input needs a batch axis 0")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"all inputs must share the batch size (axis 0), got {sizes}")
    batch = next(iter(sizes.values()))
    if batch == 0:
        raise ValueError("the batch is empty (axis 0 has size 0)")
    return int(batch)


def prepare_target(target: Any, batch: int, target_mode: str, classes: int | None = None) -> np.ndarray | None:
    """Validate ``target`` against the file's target mode; return int64 [batch] or None.

    ``target`` is ``None``, an int (same class for every sample) or integers of
    shape ``[batch]``. It is required when ``target_mode == "input"`` and
    forbidden otherwise.

    Example::

        >>> prepare_target([0, 2], 2, "input")
        array([0, 2])
        >>> prepare_target(None, 2, "max") is None
        True
    """
    if target_mode != "input":
        if target is not None:
            raise ValueError(
                f"this file was compiled with target mode {target_mode!r}, so the "
                f"explained class cannot be chosen per call; {TARGET_HINT}"
            )
        return None
    if target is None:
        raise ValueError(
            "this file was compiled with `--target input`: pass target= (an int "
            "for every sample, or one class index per sample)"
        )
    if isinstance(target, (bool, np.bool_)):
        raise ValueError("target must be an integer class index, got a bool")
    array = np.asarray(target)
    if array.dtype.kind not in "iu":
        raise ValueError(f"target must be integer class indices, got dtype {array.dtype}")
    if array.ndim == 0:
        array = np.full(batch, int(array), dtype=np.int64)
    if array.ndim != 1 or array.shape[0] != batch:
        raise ValueError(
            f"target must be an int or have shape [{batch}] (one class per sample), got shape {list(array.shape)}"
        )
    if (array < 0).any():
        raise ValueError(f"target class indices must be >= 0, got {array.tolist()}")
    if classes is not None and (array >= classes).any():
        raise ValueError(f"target class indices must be < {classes} (the model's classes), got {array.tolist()}")
    return array.astype(np.int64)
