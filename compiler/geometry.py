"""Sliding-window geometry shared by Conv, ConvTranspose and the pooling ops.

With auto_pad SAME_UPPER/SAME_LOWER the output has ceil(in / stride) positions and the total padding

    total = max((ceil(in / s) − 1)·s + (k − 1)·d + 1 − in, 0)

is split in two halves, the larger half at the end (SAME_UPPER) or at the beginning (SAME_LOWER).
"""

from __future__ import annotations

import onnx_ir as ir

from .errors import LrpcError, node_label


def static_dim(dim) -> int | None:
    return dim if isinstance(dim, int) else None


def window_geometry(node: ir.Node, x_shape, kernel: list[int]) -> dict:
    """kernel_shape, strides, dilations and explicit pads [begin…, end…] of a windowed op."""
    n = len(kernel)
    strides = list(node.attributes.get_ints("strides", [1] * n))
    dilations = list(node.attributes.get_ints("dilations", [1] * n))
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(node.attributes.get_ints("pads", [0] * 2 * n))
    elif auto_pad == "VALID":
        pads = [0] * 2 * n
    else:
        size = [static_dim(x_shape[2 + i]) if x_shape is not None else None for i in range(n)]
        if None in size:
            raise LrpcError(f"{node_label(node)}: auto_pad={auto_pad} needs static spatial input dims")
        begin, end = [], []
        for i in range(n):
            total = max((-(-size[i] // strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size[i], 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    return dict(kernel_shape=list(kernel), strides=strides, dilations=dilations, pads=pads)
