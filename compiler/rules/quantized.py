"""Relevance through the activation quantizers of a static QDQ model: R_x = R_y.

A QuantizeLinear y = saturate(round(x/s) + zp) and its DequantizeLinear x̂ = (y − zp)·s map each unit to
itself (x̂ ≈ x, up to the rounding step s), so each unit keeps its relevance, as through any other
element-wise map lrpc treats as the identity. Weights behind a DequantizeLinear are not handled here:
the linear rules read them dequantized, w = (q − zp)·s, through `passes.quantized.dequantized_constant`.
"""

from __future__ import annotations

from .table import relevance_rule


@relevance_rule("QuantizeLinear", "DequantizeLinear")
def quantizer_passthrough(node, rel_out, b, cfg):
    """R_x = R_y; the scale and zero point get none."""
    return [rel_out[0]] + [None] * (len(node.inputs) - 1)
