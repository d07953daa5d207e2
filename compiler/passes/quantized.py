"""Static QDQ models: the float value of a quantized weight, and the refusal of QOperator files.

A weight of a QDQ model is an integer initializer q behind a DequantizeLinear with constant scale s and
zero point zp; the layer computes with

    w = (q − zp) · s        s, zp scalars (per tensor) or 1-D along `axis` (per channel, default 1)

`dequantized_constant` evaluates it in numpy (float64, then the scale's type) so that the linear rules
can form W⁺, W², … at compile time (and an Add of such a constant is a bias, not a join), while the
forward keeps the DequantizeLinear node: onnxruntime still runs the quantized model. fold_constants
never folds Quantize/DequantizeLinear, so the BatchNorm and channel-affine folds see no constant weight
there and leave a quantized layer as it is.

onnxruntime runs a QDQ model by fusing each DequantizeLinear → layer → QuantizeLinear unit into an integer
kernel (QLinearConv, QLinearAdd, …) whose requantization rounds differently from the float math (ResNet-18
with per-tensor weights: logits 1.6e-2 apart). It fuses a unit only when nothing else reads the layer's
float output z, and the rules read z; `fusable_forward` gives the rules their own copy of such a layer,
so the explained file's forward fuses as the quantized model's does and computes its outputs exactly.

With int8 activations (quantize_static's default) there is a second condition: onnxruntime's x86 CPU build
fuses units with uint8 activations only, and its QDQS8ToU8Transformer turns an int8 QuantizeLinear →
DequantizeLinear pair into uint8 (zero point + 128, the same floats) only where the QuantizeLinear has
that one DequantizeLinear as its only consumer, after EnsureUniqueDQForNodeUnit has given each consumer of
a DequantizeLinear its own copy. The rules read the dequantized activations x̂, so in the explained file
every such pair has several consumers and stays int8, and no unit next to it fuses (a two-conv stack:
none; MobileNetV2 per-channel: logits 0.36 off). `fusable_forward` therefore also makes that conversion
itself, on exactly the pairs onnxruntime converts in the quantized model (judged on the forward's readers
alone). A build that fuses int8 activations (ARM, session.qdqisint8allowed) converts none and runs the
quantized model's int8 kernels where the explained file's are uint8: not checked here.

QOperator files (QLinearConv, ConvInteger, QLinearAdd, ...) compute in integers inside one node, with no
float weight or activation to explain: `check_not_qoperator` refuses them, naming the node.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import LrpcError, node_label
from ..ops import RANDOM_OPS
from .mark_static import STATIC

QOPERATOR_OPS = {
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearSoftmax",
    "QLinearReduceMean",
    "QLinearWhere",
    "QGemm",
    "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul",
    "QAttention",
    "QEmbedLayerNormalization",
}


def _const(value: ir.Value | None) -> np.ndarray | None:
    return None if value is None or value.const_value is None else value.const_value.numpy()


def dequantized_constant(value: ir.Value | None) -> np.ndarray | None:
    """(q − zp)·s when `value` is a DequantizeLinear of constants (blocked quantization excepted), else None."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return None
    q = _const(node.inputs[0])
    scale = _const(node.inputs[1]) if len(node.inputs) > 1 else None
    zp = _const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else np.zeros((), np.int64)
    if q is None or scale is None or zp is None or node.attributes.get_int("block_size", 0):
        return None
    axis = node.attributes.get_int("axis", 1) % max(q.ndim, 1)
    along = [-1 if i == axis else 1 for i in range(q.ndim)]
    per_axis = lambda a: a.astype(np.float64).reshape(() if a.size == 1 else along)
    w = (q.astype(np.float64) - per_axis(zp)) * per_axis(scale)
    return w.astype(scale.dtype)


def is_constant(value: ir.Value | None) -> bool:
    """A constant, a quantized constant DequantizeLinear(q, s, zp) (a bias of a QDQ Add), or a value no
    explained input reaches (a shape chain, a mask: passes/mark_static.py)."""
    return value is not None and (
        value.const_value is not None or bool(value.meta.get(STATIC)) or dequantized_constant(value) is not None
    )


def check_not_qoperator(node: ir.Node) -> None:
    if node.op_type in QOPERATOR_OPS and node.domain in ("", "ai.onnx", "com.microsoft"):
        raise LrpcError(
            f"{node_label(node)}: a QOperator-format quantized op ({node.op_type}) computes in integers "
            "with no float weight to explain; quantize the float model with "
            "quantize_static(..., quant_format=QuantFormat.QDQ) and compile that file"
        )


def fusable_forward(graph: ir.Graph, b) -> int:
    """Give the nodes the builder `b` added their own copy of each forward layer whose output a forward QuantizeLinear
    quantizes, so that the forward's Dequantize → layer → Quantize units stay fusable, and make uint8 the int8
    activation pairs onnxruntime makes uint8 (`unsigned_activations`); returns how many copies."""
    added_set = set(b.added)
    copies = []
    for node in [n for n in graph if n not in added_set]:
        if (
            len(node.outputs) != 1
            or node.op_type in RANDOM_OPS
            or node.op_type in ("QuantizeLinear", "DequantizeLinear")
        ):
            continue
        z = node.outputs[0]
        users = [(n, i) for n, i in z.uses() if n in added_set]
        if not users or not any(n.op_type == "QuantizeLinear" and n not in added_set for n, _ in z.uses()):
            continue
        name = b.fresh_name(f"lrp/quantized/{node.op_type}")
        twin = ir.Node(node.domain, node.op_type, list(node.inputs), attributes=node.attributes.values(), name=name)
        twin.outputs[0].name, twin.outputs[0].type, twin.outputs[0].shape = name, z.type, z.shape
        graph.insert_after(node, twin)
        for user, i in users:
            user.replace_input_with(i, twin.outputs[0])
        copies.append(twin)
    unsigned_activations(graph, b, added_set | set(copies))
    return len(copies)


def _int8_scalar(value: ir.Value | None) -> np.ndarray | None:
    """A constant int8 scalar initializer's value (onnxruntime takes no graph input for one), else None."""
    array = None if value is None or value.is_graph_input() else _const(value)
    return array if array is not None and array.dtype == np.int8 and array.size == 1 else None


def _forward_uses(value: ir.Value, added: set) -> list:
    return [(n, i) for n, i in value.uses() if n not in added]


def unsigned_activations(graph: ir.Graph, b, added: set) -> int:
    """Turn each int8 activation QuantizeLinear → DequantizeLinear pair that onnxruntime's QDQS8ToU8Transformer
    converts in the quantized model into its uint8 form, zero point + 128 (the same dequantized floats): the
    QuantizeLinear's only forward reader is the DequantizeLinear (input 0), which onnxruntime does not copy (it
    has at most one forward reader, none if it is a graph output), the QuantizeLinear's output is not a graph
    output, and both have the same constant int8 scalar zero point; returns how many.
    `added` are the explanation's nodes (`b`'s and the copies); a pair whose integers they read is left as it is."""
    converted = 0
    for q in [n for n in graph if n not in added and n.op_type == "QuantizeLinear" and n.domain in ("", "ai.onnx")]:
        y = q.outputs[0]
        readers = _forward_uses(y, added)
        if len(readers) != 1 or len(y.uses()) != 1 or y.is_graph_output() or "output_dtype" in q.attributes:
            continue
        dq, index = readers[0]
        if dq.op_type != "DequantizeLinear" or dq.domain not in ("", "ai.onnx") or index != 0:
            continue
        dq_readers = len(_forward_uses(dq.outputs[0], added))  # onnxruntime copies a DequantizeLinear read twice
        if (
            dq_readers > 1
            or (dq_readers and dq.outputs[0].is_graph_output())
            or len(q.inputs) < 3
            or len(dq.inputs) < 3
        ):
            continue
        zq, zdq = _int8_scalar(q.inputs[2]), _int8_scalar(dq.inputs[2])
        if zq is None or zdq is None or zq.item() != zdq.item():
            continue
        name = b.fresh_name(f"{q.inputs[2].name}_uint8")
        zero_point = ir.Value(
            name=name,
            shape=ir.Shape(zq.shape),
            type=ir.TensorType(ir.DataType.UINT8),
            const_value=ir.tensor((zq.astype(np.int16) + 128).astype(np.uint8), name=name),
        )
        graph.register_initializer(zero_point)
        int8 = {q.inputs[2], dq.inputs[2]}
        q.replace_input_with(2, zero_point)
        dq.replace_input_with(2, zero_point)
        y.type = ir.TensorType(ir.DataType.UINT8)
        for old in int8:  # unread now: onnxruntime would warn about each
            if not old.uses() and graph.initializers.get(old.name) is old:
                del graph.initializers[old.name]
        converted += 1
    return converted
