"""Shape-only ops route relevance back exactly: each element returns to where it came from.

Reshape / Flatten / Squeeze / Unsqueeze:  R_x = Reshape(R_y, Shape(x))
Transpose(perm):                          R_x = Transpose(R_y, perm⁻¹)
"""

from __future__ import annotations

import numpy as np

from .table import relevance_rule


@relevance_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze", exact_gradient=True)
def reshape_back(node, rel_out, b, cfg):
    x = node.inputs[0]
    return [b.op("Reshape", rel_out[0], b.op("Shape", x))] + [None] * (len(node.inputs) - 1)


@relevance_rule("Transpose", exact_gradient=True)
def transpose_back(node, rel_out, b, cfg):
    perm = node.attributes.get_ints("perm", None)
    if perm is None:
        perm = list(range(len(node.inputs[0].shape)))[::-1]
    return [b.op("Transpose", rel_out[0], perm=[int(i) for i in np.argsort(perm)])]
