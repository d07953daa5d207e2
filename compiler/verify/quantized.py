"""The float64 check of a static QDQ file: the deployed quantizers' integers, everything else in float64.

onnx's reference evaluator implements QuantizeLinear/DequantizeLinear from opset 19 only; the classes
here run them at any opset with the opset-13 semantics (a scalar or 1-D scale and zero point along
`axis`, round half to even, saturate to the integer type), in the scale's precision.

A quantizer's rounding is a decision, not an approximation float64 could improve on: onnxruntime runs
the file's Dequantize → layer → Quantize units as integer kernels (QLinearConv, QLinearAdd, …) whose
requantization rounds some values one step away from the float math, and a value near a rounding boundary
rounds either way in float32 and float64. Either would count as a float64 miss of a whole quantization
step that says nothing about the explanation. So the float64 run takes the integers every activation
QuantizeLinear produced in the float32 run (`forced`) and computes the rest in double precision: the
dequantized activations, the layers, the relevance. What it checks is then the float arithmetic between
the quantizers and the relevance built on it; the integers themselves are onnxruntime's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx.helper import make_tensor_value_info, np_dtype_to_tensor_dtype
from onnx.numpy_helper import to_array
from onnx.reference.op_run import OpRun

INTEGER_RANGES = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max) for t in (np.uint8, np.int8, np.uint16, np.int16)}


def _along(a: np.ndarray | None, ndim: int, axis: int) -> np.ndarray | None:
    """A scalar as it is, a 1-D scale or zero point shaped to broadcast along `axis`."""
    if a is None or a.size == 1:
        return None if a is None else a.reshape(())
    return a.reshape([-1 if i == axis % ndim else 1 for i in range(ndim)])


class QuantizeLinear(OpRun):
    op_domain = ""

    def _run(self, x, y_scale, y_zero_point=None, axis=None, block_size=None, **_):  # saturate: integers always
        if block_size:
            raise NotImplementedError("blocked QuantizeLinear")
        axis = 1 if axis is None else axis
        dtype = np.dtype(np.uint8) if y_zero_point is None else y_zero_point.dtype
        if dtype not in INTEGER_RANGES:
            raise NotImplementedError(f"QuantizeLinear to {dtype} (integer types only here)")
        q = np.rint(x / _along(y_scale, x.ndim, axis))
        if y_zero_point is not None:
            q = q + _along(y_zero_point, x.ndim, axis).astype(np.float64)
        return (np.clip(q, *INTEGER_RANGES[dtype]).astype(dtype),)


class DequantizeLinear(OpRun):
    op_domain = ""

    def _run(self, x, x_scale, x_zero_point=None, axis=None, block_size=None, **_):  # output_dtype: the scale's
        if block_size:
            raise NotImplementedError("blocked DequantizeLinear")
        axis = 1 if axis is None else axis
        dx = x.astype(np.float64)
        if x_zero_point is not None:
            dx = dx - _along(x_zero_point, x.ndim, axis).astype(np.float64)
        return ((dx * _along(x_scale, x.ndim, axis)).astype(x_scale.dtype),)


def activation_quantizers(reference: onnx.ModelProto, proto: onnx.ModelProto) -> list[str]:
    """The outputs of `reference`'s QuantizeLinear nodes that `proto` (the file run in float32) also computes."""
    computed = {o for n in proto.graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    return [n.output[0] for n in reference.graph.node if n.op_type == "QuantizeLinear" and n.output[0] in computed]


def forced(reference: onnx.ModelProto, quantized: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `reference` whose QuantizeLinear nodes producing `quantized`'s names are removed, those
    names becoming graph inputs (fed the float32 run's integers)."""
    model = onnx.ModelProto()
    model.CopyFrom(reference)
    kept = [n for n in model.graph.node if not (n.op_type == "QuantizeLinear" and n.output[0] in quantized)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    model.graph.input.extend(
        make_tensor_value_info(name, np_dtype_to_tensor_dtype(a.dtype), a.shape) for name, a in quantized.items()
    )
    return model


def _zero_points(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Each QuantizeLinear output's zero point (uint8 0 without one; None where it is not an initializer)."""
    constants = {t.name: t for t in model.graph.initializer}
    points = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            name = n.input[2] if len(n.input) > 2 else ""
            points[n.output[0]] = to_array(constants[name]) if name in constants else (None if name else np.uint8(0))
    return points


def in_reference_types(reference: onnx.ModelProto, proto: onnx.ModelProto, integers: dict) -> dict:
    """The float32 run's integers as `reference`'s quantizers write them. A file compiled before lrpc made the
    int8 activation pairs onnxruntime makes uint8 uint8 (passes/quantized.py) has int8 where a fresh compile has
    uint8, zero point + 128: the same q − zp, so the same dequantized floats."""
    theirs, ours = _zero_points(reference), _zero_points(proto)
    out = {}
    for name, q in integers.items():
        want, have = theirs.get(name), ours.get(name)
        if want is None or have is None or want.dtype == q.dtype or want.size != 1 or have.size != 1:
            out[name] = q
            continue
        shifted = q.astype(np.int64) - int(have.reshape(-1)[0]) + int(want.reshape(-1)[0])
        out[name] = np.clip(shifted, *INTEGER_RANGES[want.dtype]).astype(want.dtype)
    return out
