"""MaxPool sends each output's relevance to the input element that won the max.

    (y, idx) = MaxPool(x)            idx: flat position of the winner in x (batch and channel included)
    windows that never overlap (stride ≥ dilation·(k − 1) + 1 on every axis: VGG's 2×2/2):
        R_x = MaxUnpool(R_y, idx, shape(x))            each input wins at most one output
      (static spatial dims with (out − 1)·s + k − pads ≤ in on every axis: onnxruntime's MaxUnpool
      refuses an output shape smaller than that, as ceil_mode can ask)
    otherwise — overlapping windows (ResNet's 3×3/2), float64 (onnxruntime has no MaxUnpool for it):
        R_x = ScatterElements(0[numel(x)], idx, R_y, reduction=add)  reshaped to x's shape
                                     (float16: summed in float32, routing.scatter_add)

With overlapping windows one input can win several outputs; `add` sums their relevance, where
MaxUnpool would overwrite all but one. Where both apply they are equal to the bit (every position gets
one value or none); MaxUnpool writes zeros and the winners in one pass where the scatter adds into a zero
tensor element by element (VGG-16's first pool at batch 16: 148 against 247 ms, the pooling with indices
included: benchmarks/PROFILE.md §10).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import LrpcError, node_label
from ..geometry import static_dim, window_geometry
from .routing import scatter_add
from .table import relevance_rule

_UNPOOLED_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)  # onnxruntime's CPU MaxUnpool kernels


def _spatial(value: ir.Value) -> list[int | None] | None:
    return None if value.shape is None else [static_dim(d) for d in list(value.shape)[2:]]


def unpool_geometry(node: ir.Node) -> dict | None:
    """MaxUnpool's kernel_shape, strides and pads where it routes this MaxPool's relevance exactly: no input
    element in two windows, and an output shape onnxruntime accepts; None otherwise."""
    kernel = list(node.attributes.get_ints("kernel_shape"))
    x_dims, y_dims = _spatial(node.inputs[0]), _spatial(node.outputs[0])
    if not x_dims or not y_dims or None in x_dims + y_dims:
        return None
    geo = window_geometry(node, node.inputs[0].shape, kernel)
    n, strides, pads = len(kernel), geo["strides"], geo["pads"]
    if any(s < d * (k - 1) + 1 for k, s, d in zip(kernel, strides, geo["dilations"])):
        return None  # overlapping windows
    if any(
        (y - 1) * s + k - pads[i] - pads[n + i] > x
        for i, (x, y, s, k) in enumerate(zip(x_dims, y_dims, strides, kernel))
    ):
        return None
    return dict(kernel_shape=kernel, strides=strides, pads=pads)


@relevance_rule("MaxPool", exact_gradient=True)
def max_to_winner(node, rel_out, b, cfg):
    if node.attributes.get_int("storage_order", 0) != 0:
        raise LrpcError(f"{node_label(node)}: MaxPool with storage_order=1 (column-major indices) is not supported")
    x = node.inputs[0]
    attrs = {k: a.value for k, a in node.attributes.items()}
    _, indices = b.op_multi("MaxPool", x, num_outputs=2, **attrs)
    unpool = unpool_geometry(node) if b.dtype in _UNPOOLED_TYPES else None
    if unpool is not None:
        return [b.op("MaxUnpool", rel_out[0], indices, b.op("Shape", x), **unpool)]
    flat = b.const(np.array([-1], np.int64), dtype=np.int64)
    numel = b.op("Reshape", b.op("Size", x), flat)
    scattered = scatter_add(b, numel, b.op("Reshape", indices, flat), b.op("Reshape", rel_out[0], flat))
    return [b.op("Reshape", scattered, b.op("Shape", x))]
