"""Keeping the w² rule's squares inside the floating-point range.

w² computes, for a layer z = W x + b,

    z² = W²·1 + b²,   s = R / (z² + ε),   R_in = (W²)ᵀ s.

With |W| ≳ 1e19 the squares overflow float32 (3.4e38) to Inf and s = R/Inf = 0 meets W² = Inf: NaN
(float16: already at |W| ≳ 256); with |W| ≲ 1e-19 they underflow to 0 and w² loses all relevance to ε.
The rule is homogeneous in (W, b) up to ε, so scaling both by 2⁻ᵏ — exact in binary floating point —
changes nothing but ε's scale:

    W̃ = 2⁻ᵏW, b̃ = 2⁻ᵏb:   (W²)ᵀ R / (W²·1 + b² + ε) = (W̃²)ᵀ R / (W̃²·1 + b̃² + ε·4⁻ᵏ)

with k the binary exponent of max(|W|, |b|) (so the largest |W̃| or |b̃| is in [½, 1)). This is done only
where the squares would leave the dtype's range, max² · n_in ≥ max_float / 1024 or max² ≤ tiny · 1024
(float32: |W| ≳ 1e16 or ≲ 1e-17), so ordinary float32 models compile as before. For k > 0 the
stabilizer ε·4⁻ᵏ (≤ 1e-32 there) is dropped for a safe division — 0 where z̃² = 0, whose row of W̃ is all
zeros, so its R_in share is 0 either way — because a tiny ε̃ would turn R/ε̃ into Inf and 0·Inf into NaN;
the change to s elsewhere is ε̃/z̃² relative (z̃² ≥ ¼·(a row's largest |w| / the layer's)²). For k ≤ 0,
ε·4⁻ᵏ is kept, capped at the dtype's largest value. Relevance stays finite unless one row's weights are all
below ~1e-18 of the layer's largest and the explained score is large.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_ir as ir

from ..builder import Builder
from .lrp import SQ, Rule

MARGIN = 1024.0


def _magnitude(node: ir.Node) -> tuple[float, int]:
    """(max |W|, |b| with Gemm's alpha and beta applied; the number of weights)."""
    scale = (
        {1: abs(node.attributes.get_float("alpha", 1.0)), 2: abs(node.attributes.get_float("beta", 1.0))}
        if node.op_type == "Gemm"
        else {1: 1.0, 2: 1.0}
    )
    largest, count = 0.0, 1
    for i in (1, 2):
        value = node.inputs[i] if i < len(node.inputs) else None
        if value is None or value.const_value is None:
            continue
        array = np.abs(value.const_value.numpy().astype(np.float64))
        if array.size:
            largest = max(largest, float(array.max()) * scale[i])
        if i == 1:
            count = max(array.size, 1)
    return largest, count


def squares_in_range(node: ir.Node, layer, rule: Rule, b: Builder):
    """(layer, rule) with W and b scaled by 2⁻ᵏ and ε by 4⁻ᵏ where w²'s squares would leave the range."""
    if not any(t.weight == SQ for g in rule.groups for t in g.terms):
        return layer, rule
    largest, count = _magnitude(node)
    info = np.finfo(b.dtype.numpy())
    if largest == 0.0 or float(info.tiny) * MARGIN < largest**2 and largest**2 * count < float(info.max) / MARGIN:
        return layer, rule
    k = max(int(np.frexp(largest)[1]), -(info.maxexp - 1))  # 2⁻ᵏ stays representable
    factor = 2.0**-k
    eps = 0.0 if k > 0 else min(rule.eps * 4.0**-k, float(info.max))
    scaled = replace(
        layer, weight=b.scale(layer.weight, factor), bias=None if layer.bias is None else b.scale(layer.bias, factor)
    )
    return scaled, replace(rule, eps=eps)
