"""Backward rules of element-wise ops: g_x = g ⊙ f′(x), f′ declared with the op in activations.py.

    Relu          [x > 0]                     guided: [x > 0] ⊙ [g > 0]     deconvnet: [g > 0]
    Softmax       g_x = y ⊙ (g − Σ_axis g ⊙ y)
    LogSoftmax    g_x = g − exp(y) ⊙ Σ_axis g
    every op declared in activations.py (LeakyRelu, Elu, Tanh, Gelu, Erf, Pow, …): g_x = g ⊙ f′(x, y)

Relu′(0) = 0, the one-sided value PyTorch uses. Identity and Dropout reuse their LRP rule (rules/).
"""

from __future__ import annotations

import numpy as np

from ..activations import ELEMENTWISE
from ..errors import LrpcError, node_label
from .table import gradient_rule


@gradient_rule(*ELEMENTWISE)
def chain(node, g_out, b, relu):
    x, y = node.inputs[0], node.outputs[0]
    if node.op_type == "Pow" and node.inputs[1].const_value is None:
        raise LrpcError(f"{node_label(node)}: a Pow with a computed exponent; lrpc differentiates x^p for a constant p")
    return [b.op("Mul", g_out[0], ELEMENTWISE[node.op_type].derivative(b, node, x, y))] + [None] * (
        len(node.inputs) - 1
    )


@gradient_rule("Relu")
def relu_backward(node, g_out, b, relu):
    """The method's ReLU mode: the gradient, guided backprop or deconvnet."""
    g = g_out[0]
    if relu == "deconvnet":
        return [b.op("Relu", g)]
    g = b.op("Mul", g, b.positive_mask(node.outputs[0]))  # [y > 0] = [x > 0]: the fused Conv + Relu stays
    return [b.op("Relu", g) if relu == "guided" else g]


def _axis_sum(b, node, value):
    axis = node.attributes.get_int("axis", -1)
    return b.op("ReduceSum", value, b.const(np.array([axis], np.int64), dtype=np.int64), keepdims=1)


@gradient_rule("Softmax")
def softmax_backward(node, g_out, b, relu):
    g, y = g_out[0], node.outputs[0]
    return [b.op("Mul", y, b.op("Sub", g, _axis_sum(b, node, b.op("Mul", g, y))))]


@gradient_rule("LogSoftmax")
def log_softmax_backward(node, g_out, b, relu):
    g, y = g_out[0], node.outputs[0]
    return [b.op("Sub", g, b.op("Mul", b.op("Exp", y), _axis_sum(b, node, g)))]
