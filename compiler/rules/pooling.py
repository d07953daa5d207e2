"""MaxPool sends each output's relevance to the input element that won the max.

    (y, idx) = MaxPool(x)            idx: flat position of the winner in x (batch and channel included)
    R_x = ScatterElements(0[numel(x)], idx, R_y, reduction=add)  reshaped to x's shape
                                     (float16: summed in float32, routing.scatter_add)

With overlapping windows one input can win several outputs; `add` sums their relevance
(MaxUnpool would overwrite all but one).
"""

from __future__ import annotations

import numpy as np

from ..errors import LrpcError, node_label
from .routing import scatter_add
from .table import relevance_rule


@relevance_rule("MaxPool")
def max_to_winner(node, rel_out, b, cfg):
    if node.attributes.get_int("storage_order", 0) != 0:
        raise LrpcError(f"{node_label(node)}: MaxPool with storage_order=1 (column-major indices) is not supported")
    x = node.inputs[0]
    attrs = {k: a.value for k, a in node.attributes.items()}
    _, indices = b.op_multi("MaxPool", x, num_outputs=2, **attrs)
    flat = b.const(np.array([-1], np.int64), dtype=np.int64)
    numel = b.op("Reshape", b.op("Size", x), flat)
    scattered = scatter_add(b, numel, b.op("Reshape", indices, flat), b.op("Reshape", rel_out[0], flat))
    return [b.op("Reshape", scattered, b.op("Shape", x))]
