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
    quantizes, so that the forward's Dequantize → layer → Quantize units stay fusable; returns how many."""
    added_set = set(b.added)
    copies = 0
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
        copies += 1
    return copies
