"""Backward rules of the normalization layers: the exact gradient, σ not held fixed.

With n = (x − mean_A x)·inv over the normalized axes A (inv = 1/√(var_A x + ε)), y = n·γ + β:

    ĝ = g ⊙ γ,    g_x = inv ⊙ (ĝ − mean_A ĝ − n ⊙ mean_A(ĝ ⊙ n))

LayerNormalization, InstanceNormalization and GroupNormalization differ only in A and in how γ is
shaped (rules/norms.py, whose helpers this reuses).
"""

from __future__ import annotations

from ..rules.norms import _int64, _mean, grouped, inverse_std, norm_axes, per_channel
from ..rules.reduce import _rank
from .table import gradient_rule


def _through_norm(b, x, g_hat, axes, eps):
    inv = inverse_std(b, x, axes, eps)
    n = b.op("Mul", b.op("Sub", x, _mean(b, x, axes)), inv)
    centred = b.op(
        "Sub", b.op("Sub", g_hat, _mean(b, g_hat, axes)), b.op("Mul", n, _mean(b, b.op("Mul", g_hat, n), axes))
    )
    return b.op("Mul", inv, centred)


@gradient_rule("LayerNormalization", "InstanceNormalization")
def layer_norm_backward(node, g_out, b, relu):
    x, scale = node.inputs[:2]
    if node.op_type == "InstanceNormalization":
        scale = per_channel(b, scale, _rank(node))
    g_hat = b.op("Mul", g_out[0], scale)
    eps = node.attributes.get_float("epsilon", 1e-5)
    return [_through_norm(b, x, g_hat, norm_axes(node), eps)] + [None] * (len(node.inputs) - 1)


@gradient_rule("GroupNormalization")
def group_norm_backward(node, g_out, b, relu):
    x, scale = node.inputs[:2]
    groups, channelwise = grouped(node)
    g = b.op("Mul", g_out[0], per_channel(b, scale, _rank(node))) if channelwise else g_out[0]
    split = _int64(b, [0, groups, -1])
    g = b.op("Reshape", g, split)
    if not channelwise:
        g = b.op("Mul", g, b.op("Reshape", scale, _int64(b, [groups, 1])))
    gx = _through_norm(b, b.op("Reshape", x, split), g, [2], node.attributes.get_float("epsilon", 1e-5))
    return [b.op("Reshape", gx, b.op("Shape", x))] + [None] * (len(node.inputs) - 1)
