"""Recognise an input normalization in front of the first linear layer, for `zbox` bounds.

    v = (x − μ)/σ  (Sub/Div, Mul/Add with constants, in any order, through Transposes)  = x·S + T

The graph is left as it is (relevance passes these per-element ops unchanged). The first linear
layer reading v records (S, T) in its metadata, at its input's layout; the zbox rule then maps
bounds given in raw input units to the units that layer sees: l′ = min(l·S + T, h·S + T),
h′ = max(l·S + T, h·S + T).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import node_label
from ..ops import LINEAR_OPS
from .base import const_array, sole_use

INPUT_AFFINE = "lrpc.input_affine"
_STEPS = ("Sub", "Div", "Mul", "Add")


def _step(node: ir.Node, value: ir.Value, scale, shift):
    """(scale, shift) after one elementwise step `value ∘ c`, or None if it is not one."""
    if node.op_type not in _STEPS or node.outputs[0].shape != value.shape:
        return None
    other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
    c = const_array(other)
    if c is None or (node.op_type in ("Sub", "Div") and node.inputs[0] is not value):
        return None
    if c.ndim == len(value.shape):
        if c.shape[0] != 1:
            return None  # a constant that differs along the batch axis
        c = c[0]
    c = c.astype(np.float64)
    if node.op_type == "Div":
        if np.any(c == 0):
            return None
        c = 1.0 / c
    if node.op_type in ("Mul", "Div"):
        return scale * c, shift * c
    return scale, shift + (c if node.op_type == "Add" else -c)


class RecordInputNormalizationPass(ir.passes.InPlacePass):
    def __init__(self):
        super().__init__()
        self.changes: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.changes = []
        for x in model.graph.inputs:
            if x.shape is None or not all(isinstance(d, int) for d in x.shape[1:]):
                continue
            rank = len(x.shape) - 1  # S and T kept broadcastable ([3, 1, 1], not [3, H, W]): an input's
            scale, shift, value, steps = np.ones((1,) * rank), np.zeros((1,) * rank), x, 0  # size is unbounded
            while (reader := sole_use(value)) is not None:
                if reader.op_type == "Transpose":
                    perm = list(reader.attributes.get_ints("perm", range(len(value.shape))[::-1]))
                    if perm[0] != 0:
                        break
                    inner = [p - 1 for p in perm[1:]]
                    scale, shift = scale.transpose(inner), shift.transpose(inner)
                elif (found := _step(reader, value, scale, shift)) is not None:
                    scale, shift = (a.reshape((1,) * (rank - a.ndim) + a.shape) for a in np.broadcast_arrays(*found))
                    steps += 1
                else:
                    break
                value = reader.outputs[0]
            if steps and reader is not None and reader.op_type in LINEAR_OPS and reader.inputs[0] is value:
                reader.meta[INPUT_AFFINE] = (scale[None], shift[None])
                self.changes.append(
                    f"input normalization of '{x.name}' before {node_label(reader)}: "
                    "zbox bounds are taken in raw input units"
                )
        return ir.passes.PassResult(model, False)
