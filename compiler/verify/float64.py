"""The same ONNX graph in double precision, run by onnx's reference evaluator: `lrpc verify`'s oracle.

Every float32 tensor becomes float64: initializers, Constant and ConstantOfShape values, the `to`
of Cast and the `dtype` of random/Eye ops, and the declared types of inputs, outputs and
value_info. The computation is otherwise unchanged, so the float64 result differs from the float32
one only by rounding — a large difference means the float32 file is numerically unreliable
(a denominator near zero, an overflow), not that a rule is wrong.

onnxruntime's CPU build has no double kernel for Conv, so the double graph runs in
`onnx.reference.ReferenceEvaluator`, an independent numpy implementation of every ONNX op. It is
slower: `lrpc verify` takes 0.8 s on the digits CNN with 8 samples and 9 s on one 224×224 sample of
ResNet-18 (EpsilonPlusFlat; 2 CPU cores, measured with `time lrpc verify FILE --samples N`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from ..ops import RANDOM_OPS

FLOAT, DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE
TYPE_ATTRIBUTES = {
    "Cast": "to",
    "RandomNormal": "dtype",
    "RandomNormalLike": "dtype",
    "RandomUniform": "dtype",
    "RandomUniformLike": "dtype",
    "EyeLike": "dtype",
    "Multinomial": "dtype",
}


def _double_tensor(tensor: TensorProto) -> TensorProto:
    if tensor.data_type != FLOAT:
        return tensor
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _convert_node(node: onnx.NodeProto) -> None:
    for attribute in node.attribute:
        if attribute.type == AttributeProto.TENSOR:
            attribute.t.CopyFrom(_double_tensor(attribute.t))
        elif attribute.type == AttributeProto.GRAPH:
            _convert_graph(attribute.g)
        elif attribute.name == TYPE_ATTRIBUTES.get(node.op_type) and attribute.i == FLOAT:
            attribute.i = DOUBLE
    if node.op_type == "Constant" and any(a.name in ("value_float", "value_floats") for a in node.attribute):
        (attribute,) = [a for a in node.attribute if a.name in ("value_float", "value_floats")]
        value = np.array(attribute.f if attribute.name == "value_float" else list(attribute.floats), np.float64)
        node.ClearField("attribute")
        node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(value)))


def _convert_graph(graph: onnx.GraphProto) -> None:
    for tensor in graph.initializer:
        tensor.CopyFrom(_double_tensor(tensor))
    for node in graph.node:
        _convert_node(node)
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == FLOAT:
            value.type.tensor_type.elem_type = DOUBLE


def as_double(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing in float64 wherever it computed in float32."""
    double = onnx.ModelProto()
    double.CopyFrom(model)
    _convert_graph(double.graph)
    return double


def random_ops(model: onnx.ModelProto) -> list[str]:
    """The op types in `model` that draw random numbers (their draws differ between runtimes)."""
    return sorted({n.op_type for n in model.graph.node if n.op_type in RANDOM_OPS})


def run_double(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Run `model` in float64 on `feeds` (float arrays cast up) and return the tensors `names`."""
    return evaluate(as_double(model), feeds, names)


def evaluate(double: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Run a model already in float64 (as_double's) on `feeds` (float32 arrays cast up)."""
    from onnx.reference import ReferenceEvaluator

    from .reference_conv_transpose import ConvTranspose  # onnx's: wrong for groups of several channels
    from .reference_maxpool import MaxPool, MaxUnpool  # onnx's: wrong indices with padding, no output_shape
    from .reference_pad import Pad  # onnx's own refuses negative pads (crops)
    from .quantized import DequantizeLinear, QuantizeLinear  # onnx's: opset 19 and newer only

    ops = [ConvTranspose, MaxPool, MaxUnpool, Pad, QuantizeLinear, DequantizeLinear]
    evaluator = ReferenceEvaluator(double, new_ops=ops)
    feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    return dict(zip(names, evaluator.run(names, feeds)))
