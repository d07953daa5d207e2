"""Per-channel constant Mul/Add (tf2onnx's and Keras 3's inference BatchNormalization) folded into
the neighbouring linear layer, like a BatchNormalization node (fold_batchnorm.py):

    a ↦ a·c  (Mul; Div: c → 1/c)      scale = c, shift = 0
    a ↦ a + c  (Add; Sub: c → −c)     scale = 1, shift = c

where the constant c varies along one channel axis only (or is a scalar). After a linear layer it
folds into the layer's output channels; before one — directly or through a Transpose that moves
c's axis to the channel axis — into its input channels (when the layer reads no padding). The pass
repeats until nothing more folds, so a `Mul → Add` pair folds as a whole.

A shift along channel axis 1 left over after that (a pre-activation BatchNormalization: after an Add
or a ReLU, before a padded Conv) becomes, with the per-channel Mul before it, a depthwise 1×1 Conv —
weight scale, bias shift — as an unfolded BatchNormalization node does: its bias takes its share of
the relevance under every rule. Left alone: a lone scale (relevance passes it unchanged, exactly
for LRP-0), a norm's β (it absorbs its share already, rules/combine.py), and an input normalization
in front of the first layer (`zbox` reads it, passes/input_normalization.py; its relevance is the
input's).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import node_label
from .base import Canonization, bypass, const_array, sole_use
from ..ops import LINEAR_OPS
from .linear_fold import depthwise_affine, fold_into_input, fold_into_output
from .recognize_products import ABSORB

AFFINE_OPS = ("Mul", "Div", "Add", "Sub")


def channel_vector(c: np.ndarray, rank: int) -> tuple[int | None, np.ndarray] | None:
    """(axis, values) when c, broadcast against a rank-`rank` tensor, varies along ≤ 1 axis (None: scalar)."""
    if c.ndim > rank:
        return None
    shape = [1] * (rank - c.ndim) + list(c.shape)
    varying = [i for i, d in enumerate(shape) if d != 1]
    if len(varying) > 1 or (varying and varying[0] == 0):
        return None
    return (varying[0] if varying else None), c.reshape(-1).astype(np.float64)


def as_scale_shift(node: ir.Node):
    """(a, axis, scale, shift) of an affine per-channel node `a ∘ c`, else None."""
    if node.op_type not in AFFINE_OPS or len(node.inputs) != 2:
        return None
    a, c = node.inputs
    if const_array(c) is None and node.op_type in ("Mul", "Add") and const_array(a) is not None:
        a, c = c, a
    values = const_array(c)
    if values is None or a.shape is None or const_array(a) is not None or node.outputs[0].shape != a.shape:
        return None
    vector = channel_vector(values, len(a.shape))
    if vector is None:
        return None
    axis, v = vector
    if node.op_type == "Div" and np.any(v == 0):
        return None
    one, zero = np.ones_like(v), np.zeros_like(v)
    scale, shift = {"Mul": (v, zero), "Div": (1 / np.where(v == 0, 1, v), zero), "Add": (one, v), "Sub": (one, -v)}[
        node.op_type
    ]
    return a, axis, scale, shift


def _per_channel(scale, shift, channels):
    return np.broadcast_to(scale, (channels,)).copy(), np.broadcast_to(shift, (channels,)).copy()


def _layer_channels(layer: ir.Node, side: str) -> int | None:
    w = const_array(layer.inputs[1]) if len(layer.inputs) > 1 else None
    if w is None:
        return None
    g, tb = layer.attributes.get_int("group", 1), layer.attributes.get_int("transB", 0)
    if layer.op_type == "Conv":
        return w.shape[0] if side == "out" else w.shape[1] * g
    if layer.op_type == "ConvTranspose":
        return w.shape[1] * g if side == "out" else w.shape[0]
    rows, cols = w.shape[::-1] if tb else w.shape
    return cols if side == "out" else rows


def _reads_input_through_affine(value: ir.Value) -> bool:
    """`value` is a graph input after per-element constant steps and Transposes only."""
    while (p := value.producer()) is not None:
        found = as_scale_shift(p)
        if p.op_type != "Transpose" and found is None:
            return False
        value = p.inputs[0] if found is None else found[0]
    return value.is_graph_input()


def _layer_of_its_own(node: ir.Node, graph: ir.Graph) -> str | None:
    """A per-channel shift (with the per-channel scale before it) that folded nowhere → a depthwise Conv."""
    found = as_scale_shift(node)
    if found is None or node.op_type not in ("Add", "Sub") or node.meta.get(ABSORB):
        return None
    a, axis, _, shift = found
    if axis != 1 or not np.any(shift) or _reads_input_through_affine(a):
        return None
    label, scale = node_label(node), np.ones_like(shift)
    mul = a.producer()
    before = as_scale_shift(mul) if mul is not None and mul.op_type in ("Mul", "Div") else None
    if before is not None and sole_use(a) is node and before[1] in (1, None) and before[2].size in (1, shift.size):
        a, scale = before[0], np.broadcast_to(before[2], shift.shape).copy()
        bypass(graph, mul, a, rename=False)
        label = f"{node_label(mul)} and {label}"
    depthwise_affine(graph, node, a, scale, shift)
    return f"{label} → depthwise 1×1 Conv (a per-channel shift with no linear neighbour to fold into)"


class FoldChannelAffinePass(Canonization):
    def call(self, model):
        changes = []
        while super().call(model).modified:
            changes += self.changes
        for node in list(model.graph):
            if node.graph is not None and (change := _layer_of_its_own(node, model.graph)):
                changes.append(change)
        self.changes = changes
        return ir.passes.PassResult(model, bool(changes))

    def rewrite(self, node, graph):
        found = as_scale_shift(node)
        if found is None:
            return None
        a, axis, scale, shift = found
        before = a.producer()
        if (
            before is not None
            and before.op_type in LINEAR_OPS
            and sole_use(a) is node
            and axis in (1, None)
            and (n := _layer_channels(before, "out"))
            and scale.size in (1, n)
            and fold_into_output(graph, before, *_per_channel(scale, shift, n))
        ):
            bypass(graph, node, a, rename=True)
            return f"{node_label(node)} folded into the preceding {node_label(before)}"
        value, moved = node.outputs[0], axis
        reader = sole_use(value)
        if reader is not None and reader.op_type == "Transpose":
            perm = list(reader.attributes.get_ints("perm", range(len(a.shape))[::-1]))
            moved = None if axis is None else perm.index(axis)
            value, reader = reader.outputs[0], sole_use(reader.outputs[0])
        if (
            reader is not None
            and reader.op_type in LINEAR_OPS
            and reader.inputs[0] is value
            and moved in (1, None)
            and (n := _layer_channels(reader, "in"))
            and scale.size in (1, n)
            and fold_into_input(graph, reader, *_per_channel(scale, shift, n))
        ):
            bypass(graph, node, a, rename=False)
            return f"{node_label(node)} folded into the following {node_label(reader)}"
        return None
