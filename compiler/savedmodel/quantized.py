"""QuantizeLinear and DequantizeLinear in the SavedModel export (ONNX semantics, opsets 13–21).

    QuantizeLinear    y = saturate(round_half_even(x / s) + zp)   to zp's type (uint8 without zp)
    DequantizeLinear  x = (q − zp) · s                            in s's type

s and zp are scalars (per tensor) or 1-D along `axis` (default 1, per channel). Blocked quantization
(`block_size` > 0) raises `Unsupported`. Importing this module imports TensorFlow.
"""

from __future__ import annotations

import tensorflow as tf

from .ops import Unsupported, tf_op

_RANGE = {
    tf.uint8: (0, 255),
    tf.int8: (-128, 127),
    tf.uint16: (0, 65535),
    tf.int16: (-32768, 32767),
    tf.int32: (-(2**31), 2**31 - 1),
}


def _along_axis(v, x, at):
    """Reshape a 1-D scale or zero point so it broadcasts along `axis` of x."""
    if at.get("block_size", 0):
        raise Unsupported("blocked quantization (block_size > 0)")
    if v.shape.rank == 0 or v.shape.rank is None:
        return v
    rank = x.shape.rank
    axis = at.get("axis", 1) % rank
    return tf.reshape(v, [-1 if i == axis else 1 for i in range(rank)])


@tf_op("QuantizeLinear")
def _quantize(x, at):
    value, scale = x[0], x[1]
    zp = x[2] if len(x) > 2 and x[2] is not None else None
    out_type = zp.dtype if zp is not None else tf.uint8
    if out_type not in _RANGE:
        raise Unsupported(f"QuantizeLinear to {out_type.name}")
    scaled = tf.round(value / tf.cast(_along_axis(scale, value, at), value.dtype))  # tf.round: half to even
    if zp is not None:
        scaled = scaled + tf.cast(_along_axis(zp, value, at), value.dtype)
    low, high = _RANGE[out_type]
    return tf.cast(tf.clip_by_value(scaled, low, high), out_type)


@tf_op("DequantizeLinear")
def _dequantize(x, at):
    q, scale = x[0], x[1]
    zp = x[2] if len(x) > 2 and x[2] is not None else None
    wide = tf.cast(q, tf.float64 if scale.dtype == tf.float64 else tf.float32)
    if zp is not None:
        wide = wide - tf.cast(_along_axis(zp, q, at), wide.dtype)
    return tf.cast(wide * tf.cast(_along_axis(scale, q, at), wide.dtype), scale.dtype)
