"""Element-wise combinations: sums of activations split relevance in proportion to contributions.

Add, Sub and Sum of activations (residual connections) with signs σᵢ (Sub: σ = (+1, −1)):

    z = Σᵢ σᵢ xᵢ,   s = R / stab(z),   R_xᵢ = unbroadcast(σᵢ xᵢ ⊙ s)
    stab(z) = z + ε·sign₀(z), sign₀(0) = +1, ε = the layer's rule eps (ε = 0: 0 where z = 0)

An operand that is a constant takes no part in z and gets no relevance: with one activation left
(Add/Sub of a bias, Mul/Div by a scale) the unit keeps its relevance, R_x = unbroadcast(R) — except
the bias β of a norm's output (passes/recognize_products.py), which absorbs its share as a layer's bias
does: R_x = unbroadcast(x ⊙ R / stab(x + β)); under the convention "lxt" every constant addend does
(a position embedding, a mask constant: LXT's gradient × input gives them their share). A centering
x − mean(x) is one linear map (rules/norms.py); products and quotients of two activations are
rules/gates.py's.

unbroadcast sums relevance over the axes along which an operand was broadcast, back to its shape:
ReduceSum over those axes when the shapes tell them, else a scatter-add of broadcast positions.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..builder import Builder
from ..errors import LrpcError
from ..passes.quantized import is_constant
from ..passes.recognize_products import ABSORB, KIND
from .norms import centering
from .sparsity import stand_in
from .table import relevance_rule


def _same_dim(d, o) -> bool:
    if isinstance(d, int) or isinstance(o, int):
        return d == o
    return d.value is not None and d.value == o.value  # two unknown dims are not known to be equal


def unbroadcast(b: Builder, r: ir.Value, value: ir.Value, out: ir.Value) -> ir.Value:
    """Relevance r (of out's shape) summed back to the shape of `value`, which was broadcast to out."""
    vs, os_ = value.shape, out.shape
    if vs is not None and os_ is not None and len(vs) <= len(os_):
        lead = len(os_) - len(vs)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(vs) if d == 1 and not _same_dim(d, os_[lead + i])]
        if all(_same_dim(d, os_[lead + i]) or d == 1 for i, d in enumerate(vs)):
            if not axes:
                return r
            summed = b.op("ReduceSum", r, b.const(np.array(axes, np.int64), dtype=np.int64), keepdims=1)
            return summed if lead == 0 else b.op("Reshape", summed, b.op("Shape", value))
    if b.graph.opset_imports.get("", 17) < 13:  # ReduceSum takes its axes as an input from opset 13
        raise LrpcError(
            f"'{out.name}' broadcasts '{value.name}' along axes unknown at compile time (shapes "
            f"{vs} → {os_}), which lrpc sums at run time only in opset ≥ 13: export the model at "
            "opset 13 or later, or with static shapes"
        )
    return _unbroadcast_at_run_time(b, r, value)


def _unbroadcast_at_run_time(b: Builder, r: ir.Value, value: ir.Value) -> ir.Value:
    """unbroadcast with the summed axes found from the shapes at run time: where value's shape, padded with
    leading 1s to r's rank, differs from r's. None (operands of one shape) leaves r as it is."""
    shape = b.op("Shape", value)
    lead = b.op("Sub", b.op("Shape", b.op("Shape", r)), b.op("Shape", shape))
    ones = b.op("ConstantOfShape", lead, value=ir.tensor(np.ones(1, np.int64)))
    padded = b.op("Concat", ones, shape, axis=0)
    axes = b.op(
        "Reshape",
        b.op("NonZero", b.op("Not", b.op("Equal", padded, b.op("Shape", r)))),
        b.const(np.array([-1], np.int64), dtype=np.int64),
    )
    summed = b.op("ReduceSum", r, axes, keepdims=1, noop_with_empty_axes=1)
    return b.op("Reshape", summed, shape)


def _activations(node: ir.Node) -> list[int]:
    return [i for i, v in enumerate(node.inputs) if v is not None and not is_constant(v)]


def _keep_with_unit(node, r, b, live: int):
    rel = [None] * len(node.inputs)
    rel[live] = unbroadcast(b, r, node.inputs[live], node.outputs[0])
    return rel


@relevance_rule("Add", "Sub", "Sum")
def proportional(node, rel_out, b, cfg):
    live, r = _activations(node), rel_out[0]
    if node.meta.get(KIND) == "centering":
        return centering(node, r, b, cfg)
    if len(live) == 1 and (node.meta.get(ABSORB) or cfg.absorb_constants):  # y = x ± c: R_x = ±x ⊙ R / stab(y)
        signed = node.inputs[live[0]] if node.op_type != "Sub" or live[0] == 0 else b.op("Neg", node.inputs[1])
        r = b.op("Mul", signed, b.divide(r, node.outputs[0], cfg.rule_for(node).eps))
    if len(live) == 1:
        return _keep_with_unit(node, r, b, live[0])
    negate = lambda i: node.op_type == "Sub" and i == 1
    terms = [b.op("Neg", node.inputs[i]) if negate(i) else node.inputs[i] for i in live]
    z = node.outputs[0] if len(live) == len(node.inputs) else b.add_all(terms)
    eps = cfg.rule_for(node).eps
    relu = stand_in(b, cfg.relu_stand_ins, z) if eps > 0 else None
    if relu is not None:  # R = 0 where z ≤ 0, and z = max(z, 0) elsewhere (sparsity.py)
        s = b.op("Div", r, b.op("Add", relu, b.const(eps)))
    else:
        s = b.divide(r, z, eps)
    rel = [None] * len(node.inputs)
    for i, t in zip(live, terms):
        rel[i] = unbroadcast(b, b.op("Mul", t, s), node.inputs[i], node.outputs[0])
    return rel
