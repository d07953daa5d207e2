"""Inference BatchNormalization folded into the neighbouring linear layer.

    BN(a) = γ·(a − μ)/√(σ² + ε) + β = scale·a + shift,   scale = γ/√(σ² + ε),  shift = β − μ·scale

so after a layer z = W x + b:  W' = scale·W,  b' = (b − μ)·scale + β  (linear_fold.py). Tried in order:
into the linear layer before it (its only reader), into the linear layer after it (its only reader,
reading no padding), else the BN becomes a depthwise 1×1 Conv — weight scale, bias shift — an
affine layer of its own that keeps channels apart. (iNNvestigate 2.1.2 squares the variance and
drops γ from the mean term; this is the exact formula.)
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import LrpcError, node_label
from .base import Canonization, bypass, const_array, sole_use
from ..ops import LINEAR_OPS
from .linear_fold import depthwise_affine, fold_into_input, fold_into_output


def bn_affine(node: ir.Node) -> tuple[np.ndarray, np.ndarray]:
    params = [const_array(v) for v in node.inputs[1:5]]
    if any(p is None for p in params):
        raise LrpcError(
            f"{node_label(node)}: its scale, bias, mean and variance must be constants (export the model in eval mode)"
        )
    if node.attributes.get_int("training_mode", 0) or any(v.uses() for v in node.outputs[1:]):
        raise LrpcError(f"{node_label(node)}: BatchNormalization in training mode; export in eval mode")
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    scale = gamma / np.sqrt(var + node.attributes.get_float("epsilon", 1e-5))
    return scale, beta - mean * scale


class FoldBatchNormPass(Canonization):
    def rewrite(self, node, graph):
        if node.op_type != "BatchNormalization":
            return None
        scale, shift = bn_affine(node)
        x, y = node.inputs[0], node.outputs[0]
        before, after = x.producer(), sole_use(y)
        if (
            before is not None
            and before.op_type in LINEAR_OPS
            and sole_use(x) is node
            and fold_into_output(graph, before, scale, shift)
        ):
            bypass(graph, node, x, rename=True)  # y may be a graph output: x takes its name
            return f"{node_label(node)} folded into the preceding {node_label(before)}"
        if (
            after is not None
            and after.op_type in LINEAR_OPS
            and after.inputs[0] is y
            and fold_into_input(graph, after, scale, shift)
        ):
            bypass(graph, node, x, rename=False)
            return f"{node_label(node)} folded into the following {node_label(after)}"
        if x.shape is None or len(x.shape) < 2:
            raise LrpcError(f"{node_label(node)}: the input's rank is unknown; cannot make it a layer")
        depthwise_affine(graph, node, node.inputs[0], scale, shift)
        return f"{node_label(node)} → depthwise 1×1 Conv (no linear neighbour to fold into)"
