"""Backward rules of the activation quantizers: the clipped straight-through estimator.

round() has derivative 0 almost everywhere; quantization-aware training takes the straight-through
gradient (Bengio et al. 2013) inside the representable range and 0 where QuantizeLinear saturates:

    QuantizeLinear(x, s, zp)     g_x = g ⊙ [lo < x < hi],  lo = (q_min − zp)·s,  hi = (q_max − zp)·s
    DequantizeLinear(q, s, zp)   g_q = g                   (the pair's straight-through slope is 1)

The clip matters: onnxruntime's quantizer drops a ReLU into the QuantizeLinear after it (zp = q_min, so
lo = 0), and the mask is then that ReLU's derivative, Relu′(0) = 0 as in PyTorch. s and zp must be
constant scalars (static activation quantization is per tensor).
"""

from __future__ import annotations

import numpy as np

from ..errors import LrpcError, node_label
from .table import gradient_rule

_INT_RANGE = {
    np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32)
}


def _scalar(node, index):
    value = node.inputs[index] if len(node.inputs) > index else None
    array = None if value is None or value.const_value is None else value.const_value.numpy()
    if value is not None and (array is None or array.size != 1):
        raise LrpcError(
            f"{node_label(node)}: input {index} is not a constant scalar; the gradient methods take "
            "activation QuantizeLinear with one constant scale and zero point (static, per tensor)"
        )
    return array


@gradient_rule("QuantizeLinear")
def quantize_grad(node, g_out, b, relu):
    scale, zp = _scalar(node, 1), _scalar(node, 2)
    qtype = zp.dtype if zp is not None else np.dtype(np.uint8)
    if qtype not in _INT_RANGE:
        raise LrpcError(f"{node_label(node)}: QuantizeLinear to {qtype}; lrpc takes 8-, 16- and 32-bit integers")
    q_min, q_max = _INT_RANGE[qtype]
    z = 0.0 if zp is None else float(zp.reshape(-1)[0])
    s = float(scale.reshape(-1)[0])
    lo, hi = sorted(((q_min - z) * s, (q_max - z) * s))
    x = node.inputs[0]
    inside = b.op("And", b.op("Greater", x, b.const(lo)), b.op("Less", x, b.const(hi)))
    return [b.op("Mul", g_out[0], b.op("Cast", inside, to=b.dtype))] + [None] * (len(node.inputs) - 1)


@gradient_rule("DequantizeLinear")
def dequantize_grad(node, g_out, b, relu):
    return [g_out[0]] + [None] * (len(node.inputs) - 1)
