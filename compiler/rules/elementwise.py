"""Element-wise activations pass relevance through unchanged: R_x = R_y.

They are monotone maps applied per unit, so the unit's relevance stays with the unit
(the LRP convention for ReLU and its smooth relatives).
"""

from __future__ import annotations

from .table import relevance_rule


@relevance_rule("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Tanh", "Sigmoid", "HardSigmoid",
                "Softplus", "Clip", "Identity", "Dropout")
def passthrough(node, rel_out, b, cfg):
    return [rel_out[0]] + [None] * (len(node.inputs) - 1)
