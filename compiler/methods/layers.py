"""Backward rules of linear layers, arithmetic, reductions and Resize: g_in = Jᵀ g_out.

    Conv, ConvTranspose, Gemm, MatMul (z = W x + b):  g_x = Wᵀ g      (LinearLayer.apply_t, then unwrap:
                                                       Gemm's α is in its weight, transA transposes back)
    MatMul of two activations (O = A·B):  g_A = g·Bᵀ,  g_B = Aᵀ·g     (summed over broadcast batch axes)
    Add / Sum:    g_xᵢ = unbroadcast(g)                Sub: g_x₀ = unbroadcast(g), g_x₁ = −unbroadcast(g)
    Mul:          g_a = unbroadcast(g ⊙ b)             (a constant operand gets nothing; both live: both terms)
    Div (a / b):  g_a = unbroadcast(g / b),            g_b = −unbroadcast(g ⊙ y / b)
    ReduceSum:    g_x = Expand(g, shape(x))            (g unsqueezed first where keepdims = 0)
    ReduceMean, GlobalAveragePool:  the same, ⊙ numel(y)/numel(x)
    Resize:       g_x = Aᵀ g, A the interpolation matrix (rules/resample.py builds Aᵀ per axis)

Shape ops, Concat/Split/Slice/Pad/Gather/Expand/Tile, MaxPool, ReduceMax and GlobalMaxPool reuse their
LRP rule, which routes exactly (table.py), as do Where, a float Cast, Identity and Dropout: each is
registered in rules/ with `exact_gradient=True`. AveragePool never arrives
here: the passes turn it into a depthwise Conv (and a constant Mul at the borders), BatchNormalization
into a Conv's weights.
"""

from __future__ import annotations

import numpy as np

from ..passes.recognize_products import KIND
from ..rules.attention import _batch_unbroadcast, _swap_last
from ..rules.combine import unbroadcast
from ..rules.linear_layers import LAYERS
from ..rules.reduce import _rank, _reduced_axes, slab_fraction
from ..rules.resample import resize_adjoint, resize_axes
from ..rules.table import EXACT_GRADIENT
from .table import gradient_rule, reuse_lrp_rule

reuse_lrp_rule(*EXACT_GRADIENT)  # routing: the rules registered with exact_gradient=True (rules/table.py)


@gradient_rule(*LAYERS)
def linear_backward(node, g_out, b, relu):
    if node.meta.get(KIND) == "product":  # O = A·B of two activations: g_A = g·Bᵀ, g_B = Aᵀ·g
        a, w = node.inputs
        return [
            _batch_unbroadcast(b, b.op("MatMul", g_out[0], _swap_last(b, w)), a, node.outputs[0]),
            _batch_unbroadcast(b, b.op("MatMul", _swap_last(b, a), g_out[0]), w, node.outputs[0]),
        ]
    layer = LAYERS[node.op_type](node, b)
    g_in = [None] * len(node.inputs)
    g_in[layer.x_index] = layer.unwrap(b, layer.apply_t(b, g_out[0], layer.weight))
    return g_in


def _live(node) -> list[bool]:
    return [v is not None and v.const_value is None for v in node.inputs]


@gradient_rule("Add", "Sub", "Sum")
def sum_backward(node, g_out, b, relu):
    g, y = g_out[0], node.outputs[0]
    g_in = []
    for i, (x, live) in enumerate(zip(node.inputs, _live(node))):
        part = unbroadcast(b, g, x, y) if live else None
        g_in.append(b.op("Neg", part) if part is not None and node.op_type == "Sub" and i == 1 else part)
    return g_in


@gradient_rule("Mul")
def product_backward(node, g_out, b, relu):
    (a, c), y = node.inputs, node.outputs[0]
    live = _live(node)
    return [
        unbroadcast(b, b.op("Mul", g_out[0], c), a, y) if live[0] else None,
        unbroadcast(b, b.op("Mul", g_out[0], a), c, y) if live[1] else None,
    ]


@gradient_rule("Div")
def quotient_backward(node, g_out, b, relu):
    (a, c), y, g = node.inputs, node.outputs[0], g_out[0]
    live = _live(node)
    return [
        unbroadcast(b, b.op("Div", g, c), a, y) if live[0] else None,
        unbroadcast(b, b.op("Neg", b.op("Div", b.op("Mul", g, y), c)), c, y) if live[1] else None,
    ]


def _spread(b, node, g, axes):
    """g (the reduction's output gradient) expanded back over the reduced axes to x's shape."""
    x = node.inputs[0]
    if node.op_type != "GlobalAveragePool" and not node.attributes.get_int("keepdims", 1) and axes:
        g = b.op("Unsqueeze", g, b.const(np.array(axes, np.int64), dtype=np.int64))
    return b.op("Expand", g, b.op("Shape", x))


@gradient_rule("ReduceSum", "ReduceMean", "GlobalAveragePool")
def reduce_backward(node, g_out, b, relu):
    rank = _rank(node)
    axes = list(range(2, rank)) if node.op_type == "GlobalAveragePool" else _reduced_axes(node, rank)
    rest = [None] * (len(node.inputs) - 1)
    if not axes:
        return [g_out[0]] + rest
    g = _spread(b, node, g_out[0], axes)
    if node.op_type != "ReduceSum":
        g = b.op("Mul", g, slab_fraction(b, node, axes))
    return [g] + rest


@gradient_rule("Resize")
def resize_backward(node, g_out, b, relu):
    return [resize_adjoint(b, node, g_out[0], resize_axes(node))] + [None] * (len(node.inputs) - 1)
