"""Normalization layers, with the denominator held fixed and the centring kept (LXT's LayerNorm rule).

A norm computes, over its normalized axes A (per sample, per group),

    y = (x − mean_A x) · inv · γ + β,      inv = 1 / √(var_A x + ε)

With inv held fixed, y is linear in x: J = diag(γ·inv)(I − 𝟙𝟙ᵀ/n), and LRP-0 on it (β absorbs its
share, as a bias does; stab as in combine.py, the rule's ε) gives

    s = R / stab(y),   u = γ ⊙ s · inv,   R_x = x ⊙ (u − mean_A u)         (Σ R_x = Σ R − Σ β ⊙ s)

    LayerNormalization       A = axis … rank−1, γ and β of the normalized shape
    InstanceNormalization    A = the spatial axes, γ and β per channel
    GroupNormalization       A = a group's channels and the spatial axes, γ and β per channel (opset 21)
                             or per group (opset 18)
    centering d = x − mean_A x (LayerNorm written out of primitive ops): s = R / stab(d), the same R_x.

An RMSNorm x·rsqrt(mean x² + ε)·γ has no centring: with the rsqrt fixed it scales x, and R_x = R
(rules/gates.py, a normalizer).
"""

from __future__ import annotations

from ..errors import LrpcError, node_label
from ..passes.recognize_products import NAME
from .reduce import _int64, _rank, _reduced_axes
from .table import relevance_rule


def _mean(b, t, axes):
    if b.graph.opset_imports.get("", 17) < 18:  # axes became an input in opset 18
        return b.op("ReduceMean", t, axes=list(axes), keepdims=1)
    return b.op("ReduceMean", t, _int64(b, axes), keepdims=1)


def centred(b, s, axes):
    """s − mean_axes s: the centring (I − 𝟙𝟙ᵀ/n), its own transpose, applied to the quotient s."""
    return b.op("Sub", s, _mean(b, s, axes))


def centred_relevance(b, x, s, axes):
    """x ⊙ (s − mean_axes s): LRP-0 through the centring."""
    return b.op("Mul", x, centred(b, s, axes))


def inverse_std(b, x, axes, eps):
    """1 / √(mean_axes (x − mean_axes x)² + ε), recomputed from x as the norm did."""
    d = b.op("Sub", x, _mean(b, x, axes))
    var = _mean(b, b.op("Mul", d, d), axes)
    return b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.const(eps))))


def centering(node, r, b, cfg):
    """d = x − mean(x), recognised by passes/recognize_products.py: x takes the whole relevance. Inside a
    LayerNorm R = d ⊙ (γ·inv ⊙ R_y / stab(y)) arrives, and s = R / d undoes the factor d exactly
    (ε = 0, safe division): stabilizing again would bend s where |d| is near ε."""
    mean = node.inputs[1].producer()
    axes = _reduced_axes(mean, _rank(mean))
    eps = 0.0 if node.meta.get(NAME) == "LayerNorm centering" else cfg.rule_for(node).eps
    s = b.divide(r, node.outputs[0], eps)
    return [centred_relevance(b, node.inputs[0], s, axes), None]


def norm_axes(node) -> list[int]:
    rank = _rank(node)
    if node.op_type == "LayerNormalization":
        return list(range(node.attributes.get_int("axis", -1) % rank, rank))
    return list(range(2, rank))


def per_channel(b, value, rank):
    """A [C] vector shaped [C, 1, …] to scale an [N, C, …] tensor."""
    return b.op("Reshape", value, _int64(b, [-1] + [1] * (rank - 2)))


def held_norm_adjoint(node, s, b):
    """Jᵀ s of a norm with inv held fixed, J = diag(γ·inv)(I − 𝟙𝟙ᵀ/n) per sample (per group): the
    relevance rule is x ⊙ Jᵀ(R / stab(y)); gradient_form.py applies Jᵀ to the gradient itself."""
    x, scale = node.inputs[:2]
    rank, eps = _rank(node), node.attributes.get_float("epsilon", 1e-5)
    if node.op_type != "GroupNormalization":
        axes = norm_axes(node)
        if node.op_type == "InstanceNormalization":
            scale = per_channel(b, scale, rank)
        return centred(b, b.op("Mul", b.op("Mul", s, scale), inverse_std(b, x, axes, eps)), axes)
    groups, channelwise = grouped(node)
    if channelwise:
        s = b.op("Mul", s, per_channel(b, scale, rank))
    split = _int64(b, [0, groups, -1])
    sg = b.op("Reshape", s, split)
    if not channelwise:
        sg = b.op("Mul", sg, b.op("Reshape", scale, _int64(b, [groups, 1])))
    u = b.op("Mul", sg, inverse_std(b, b.op("Reshape", x, split), [2], eps))
    return b.op("Reshape", centred(b, u, [2]), b.op("Shape", x))


def grouped(node):
    """(groups, whether γ and β are per channel) of a GroupNormalization with a static channel count."""
    x, scale = node.inputs[0], node.inputs[1]
    groups = node.attributes.get_int("num_groups")
    channels = x.shape[1] if x.shape is not None and len(x.shape) > 1 else None
    if not isinstance(channels, int) or scale.shape is None or not isinstance(scale.shape[0], int):
        raise LrpcError(f"{node_label(node)}: GroupNormalization needs a static channel count")
    return groups, scale.shape[0] == channels


@relevance_rule("LayerNormalization", "InstanceNormalization", "GroupNormalization")
def layer_norm(node, rel_out, b, cfg):
    s = b.divide(rel_out[0], node.outputs[0], cfg.rule_for(node).eps)
    return [b.op("Mul", node.inputs[0], held_norm_adjoint(node, s, b))] + [None] * (len(node.inputs) - 1)
