"""Element-wise activations pass relevance through unchanged: R_x = R_y.

They are maps applied per unit, so the unit's relevance stays with the unit (the LRP convention for
ReLU and its smooth relatives). The self-gated ones, y = x·f(x) — HardSwish, Gelu, Mish, Swish as ONNX
ops; written out of primitive ops they are recognised at their Mul (rules/gates.py) — take the same
identity rule, as Zennit does for activations and AttnLRP for GELU and SiLU. Neg (y = −x) passes it too:
R_x = x ⊙ (−1)·R/(−x) = R. Each of them but Relu is declared once, with its derivative and its TensorFlow
expression, in activations.py (`activation(...)`); this module registers the rule for all of them.
Identity, Dropout and a float Cast pass it too, and that is their exact gradient (`exact_gradient`).
"""

from __future__ import annotations

from ..activations import passing_ops
from ..errors import LrpcError, node_label
from .table import relevance_rule


def passthrough(node, rel_out, b, cfg):
    return [rel_out[0]] + [None] * (len(node.inputs) - 1)


relevance_rule("Relu", *passing_ops())(passthrough)  # the declared activations (activations.py) and Relu
relevance_rule("Identity", "Dropout", exact_gradient=True)(passthrough)


@relevance_rule("Cast", exact_gradient=True)
def cast(node, rel_out, b, cfg):
    """A cast between float types (a model computing a norm in float32) passes relevance in x's type."""
    x = node.inputs[0]
    if x.dtype is None or not x.dtype.is_floating_point() or not node.outputs[0].dtype.is_floating_point():
        raise LrpcError(
            f"{node_label(node)}: a Cast from {x.dtype} to {node.outputs[0].dtype} of a value computed "
            "from the input; lrpc passes relevance only through casts between float types"
        )
    return [b.op("Cast", rel_out[0], to=x.dtype)]
