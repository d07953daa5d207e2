"""Shapes and constants in the oracle's ONNX reader (onnx_reader.py), without lrpc code: the per-sample
output shape of a shape-only op (Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout), a Reduce's
axes, and the value of a node that only constants and shapes feed (Shape, Gather, Cast, Concat, Slice,
Squeeze, Unsqueeze), a Shape's batch dimension taken as 1.
"""

from __future__ import annotations

import numpy as np
from onnx import helper


def reshaped(r, node, a, c, shape):
    """The per-sample output shape of a shape-only op on a sample of `shape` (batch axis 1 for numpy)."""
    op, probe = node.op_type, np.empty((1, *shape))
    if op == "Flatten":
        assert a.get("axis", 1) == 1, "Flatten with axis ≠ 1"
        return (probe[0].size,)
    if op == "Reshape" and c[1] is None:  # a shape computed from Shape: ONNX shape inference knows it
        return r.inferred(node.output[0])
    if op == "Reshape":
        target = [probe.shape[i] if d == 0 and not a.get("allowzero", 0) else int(d) for i, d in enumerate(c[1])]
        out = probe.reshape(target).shape
        assert out[0] == 1, "Reshape moves values across samples"
        return out[1:]
    axes = axes_of(a, c)
    if op == "Squeeze":
        return tuple(d for d in shape if d != 1) if axes is None else np.squeeze(probe, tuple(axes)).shape[1:]
    if op == "Unsqueeze":
        return np.expand_dims(probe, tuple(axes)).shape[1:]
    return shape  # Identity, Dropout


def axes_of(a, c):
    return a.get("axes") if len(c) < 2 or c[1] is None else [int(v) for v in c[1]]


def spatial_axes(a, c, shape, channels_last=False) -> bool:
    """Whether a Reduce's axes are all the spatial axes: 2..rank-1 (NC…), or 1..rank-2 (N…C)."""
    axes = axes_of(a, c)
    spatial = range(1, len(shape)) if channels_last else range(2, len(shape) + 1)
    return axes is not None and sorted(int(x) % (len(shape) + 1) for x in axes) == list(spatial)


def fold_constant(r, node, a):
    """The value of a node that only constants and shapes feed (a Shape's batch dimension is 1, as the
    probes of reshaped take it), or None where the oracle does not evaluate the op."""
    c = [r.consts.get(v) if v else None for v in node.input]
    if node.op_type == "Shape":
        return np.array([1, *r.net.shapes[node.input[0]]], np.int64)
    if any(v is None for v in c[:1]) or any(v is None and name for v, name in zip(c, node.input)):
        return None
    op = node.op_type
    if op == "Gather":
        return np.take(c[0], c[1], axis=a.get("axis", 0))
    if op == "Cast":
        return c[0].astype(helper.tensor_dtype_to_np_dtype(a["to"]))
    if op == "Concat":
        return np.concatenate(c, axis=a["axis"])
    if op == "Slice":
        axes = c[3] if len(c) > 3 and c[3] is not None else range(len(c[1]))
        steps = c[4] if len(c) > 4 and c[4] is not None else [1] * len(c[1])
        at = [slice(None)] * c[0].ndim
        for s, e, ax, st in zip(c[1], c[2], axes, steps):
            at[int(ax)] = slice(int(s), int(e), int(st))
        return c[0][tuple(at)]
    if op in ("Squeeze", "Unsqueeze"):
        axes = tuple(int(v) for v in axes_of(a, c))
        return np.squeeze(c[0], axes) if op == "Squeeze" else np.expand_dims(c[0], axes)
    return None
