"""Reductions: a sum splits relevance in proportion to the summands, a max gives it to the winner.

    ReduceSum(x; axes):   R_x = x ⊙ Expand(R / stab(y))      y = Σ_axes x,  stab as in combine.py (rule eps)
    ReduceMean(x; axes):  R_x = x/n ⊙ Expand(R / stab(y))    y = Σ_axes x/n (n: elements per slab); a mean
                          the passes left alone: over tokens or channels, or with dynamic dims
    ReduceMax(x; axes), GlobalMaxPool (axes = all spatial):
                          R_x[i] = R_y[o] if i is the winner of o's slab, else 0

The winner is the first maximum in row-major order over the reduced axes (ArgMax with
select_last_index = 0 on x transposed to (kept axes…, reduced axes…) and flattened to (kept…, −1)),
the convention of MaxPool's rule.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import LrpcError, node_label
from .table import relevance_rule


def _reduced_axes(node: ir.Node, rank: int) -> list[int]:
    """The reduced axes, sorted and non-negative ([] for a no-op reduction)."""
    axes = node.attributes.get_ints("axes", None)
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        if node.inputs[1].const_value is None:
            raise LrpcError(f"{node_label(node)}: its axes are computed at run time; lrpc needs constant axes")
        axes = node.inputs[1].const_value.numpy().reshape(-1).tolist()
    if not axes:
        return [] if node.attributes.get_int("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


def _rank(node: ir.Node) -> int:
    shape = node.inputs[0].shape
    if shape is None:
        raise LrpcError(f"{node_label(node)}: the rank of its input is unknown; export with static ranks")
    return len(shape)


def _int64(b, values):
    return b.const(np.asarray(values, np.int64), dtype=np.int64)


@relevance_rule("ReduceSum", "ReduceMean")
def reduce_sum_split(node, rel_out, b, cfg):
    x, y, r = node.inputs[0], node.outputs[0], rel_out[0]
    axes, rest = _reduced_axes(node, _rank(node)), [None] * (len(node.inputs) - 1)
    if not axes:
        return [r] + rest
    s = b.divide(r, y, cfg.rule_for(node).eps)
    if node.op_type == "ReduceMean":
        s = b.op("Mul", s, slab_fraction(b, node, axes))
    if not node.attributes.get_int("keepdims", 1):
        s = b.op("Unsqueeze", s, _int64(b, axes))
    return [b.op("Mul", x, s)] + rest


def slab_fraction(b, node: ir.Node, axes: list[int]) -> ir.Value:
    """1/n of a mean over `axes`: a constant where the reduced dims are static, else numel(y)/numel(x)."""
    dims = [node.inputs[0].shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        return b.const(1.0 / float(np.prod(dims)))
    size = lambda v: b.op("Cast", b.op("Size", v), to=b.dtype)
    return b.op("Div", size(node.outputs[0]), size(node.inputs[0]))


def to_winner(b, x: ir.Value, r: ir.Value, axes: list[int], rank: int, keepdims: bool) -> ir.Value:
    kept = [a for a in range(rank) if a not in axes]
    perm = kept + axes
    moved = x if perm == list(range(rank)) else b.op("Transpose", x, perm=perm)
    flat = b.op("Reshape", moved, _int64(b, [0] * len(kept) + [-1]))
    winner = b.op("ArgMax", flat, axis=-1, keepdims=1, select_last_index=0)
    if not keepdims:
        r = b.op("Unsqueeze", r, _int64(b, axes))
    zeros = b.op("ConstantOfShape", b.op("Shape", flat), value=ir.tensor(np.zeros(1, b.dtype.numpy())))
    placed = b.op("ScatterElements", zeros, winner, b.op("Reshape", r, b.op("Shape", winner)), axis=-1)
    placed = b.op("Reshape", placed, b.op("Shape", moved))
    return placed if moved is x else b.op("Transpose", placed, perm=[int(i) for i in np.argsort(perm)])


@relevance_rule("ReduceMax", exact_gradient=True)
def reduce_max_to_winner(node, rel_out, b, cfg):
    rank = _rank(node)
    axes, rest = _reduced_axes(node, rank), [None] * (len(node.inputs) - 1)
    if not axes:
        return [rel_out[0]] + rest
    keepdims = bool(node.attributes.get_int("keepdims", 1))
    return [to_winner(b, node.inputs[0], rel_out[0], axes, rank, keepdims)] + rest


@relevance_rule("GlobalMaxPool", exact_gradient=True)
def global_max_to_winner(node, rel_out, b, cfg):
    rank = _rank(node)
    return [to_winner(b, node.inputs[0], rel_out[0], list(range(2, rank)), rank, True)]
