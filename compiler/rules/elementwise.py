"""Element-wise activations pass relevance through unchanged: R_x = R_y.

They are maps applied per unit, so the unit's relevance stays with the unit (the LRP convention for
ReLU and its smooth relatives). The self-gated ones, y = x·f(x) — HardSwish, Gelu, Mish, Swish as ONNX
ops; written out of primitive ops they are recognised at their Mul (rules/gates.py) — take the same
identity rule, as Zennit does for activations and AttnLRP for GELU and SiLU.
"""

from __future__ import annotations

from .table import relevance_rule


@relevance_rule("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Tanh", "Sigmoid", "HardSigmoid",
                "Softplus", "Softsign", "Clip", "Identity", "Dropout", "HardSwish", "Gelu", "Mish", "Swish")
def passthrough(node, rel_out, b, cfg):
    return [rel_out[0]] + [None] * (len(node.inputs) - 1)
