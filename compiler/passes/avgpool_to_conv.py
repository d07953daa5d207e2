"""Average pooling becomes a depthwise (diagonal) Conv, so that each channel is averaged alone.

    AveragePool(x)[c, o] = 1/n(o) · Σ_{j ∈ window(o)} x[c, j]
      → Conv(x, W, group=C) ⊙ m,    W[c, 0, …] = 1/K,  K = Π kᵢ,  m(o) = K / n(o)

n(o) is the pool's divisor at output position o: K inside the map; at the borders the number of
window elements that lie in the input (count_include_pad=0, what Keras `padding="same"` exports) or
in input and pads (count_include_pad=1; a ceil_mode window hanging past the pads is clipped). A
window is a box, so n is a product of per-axis counts. Where m ≡ 1 (no padding, or pads counted)
no Mul is added. GlobalAveragePool and ReduceMean over spatial axes are one window over the map.

Why diagonal: a dense kernel W[c, c′, …] = 1/(K·C) would let rules that look only at the kernel's
structure (flat, w2) spread one channel's relevance over every input channel.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import LrpcError, node_label
from ..geometry import static_dim, window_geometry
from .base import Canonization, const_array, fresh_name, replace_node
from .fold_constants import new_constant

ORIGIN = "lrpc.origin"


def axis_counts(size: int, out: int, k: int, s: int, d: int, begin: int, end: int, include_pad: bool):
    """n along one axis: how many of each output's k window taps fall inside the counted range."""
    taps = np.arange(out)[:, None] * s - begin + np.arange(k)[None, :] * d
    low, high = (-begin, size + end) if include_pad else (0, size)
    return ((taps >= low) & (taps < high)).sum(axis=1)


def _depthwise(tape: ir.tape.Tape, graph, node, x, kernel, geo, scale_map=None) -> ir.Value:
    """Conv(x, 1/K, group=C) [⊙ scale_map], recorded on `tape`."""
    channels = static_dim(x.shape[1])
    dtype = x.dtype.numpy()
    name = fresh_name(graph, node.name or node.op_type, node)
    weight = np.full([channels, 1, *kernel], 1.0 / np.prod(kernel), dtype)
    y = tape.op(
        "Conv", [x, new_constant(graph, f"{name}.diag_weight", weight)], attributes=dict(geo, group=channels), name=name
    )
    y.producer().meta[ORIGIN] = "pool"  # composites give pools their own rule (rules/assign.py)
    if scale_map is not None:
        y = tape.op(
            "Mul",
            [y, new_constant(graph, f"{name}.divisor_correction", scale_map.astype(dtype))],
            name=f"{name}/divisor",
        )
    return y


def _average_pool(node: ir.Node, graph: ir.Graph) -> str | None:
    x, y = node.inputs[0], node.outputs[0]
    kernel = list(node.attributes.get_ints("kernel_shape"))
    geo = window_geometry(node, x.shape, kernel)
    n, pads = len(kernel), geo["pads"]
    include_pad = bool(node.attributes.get_int("count_include_pad", 0))
    ceil_mode = bool(node.attributes.get_int("ceil_mode", 0))
    sizes = [static_dim(x.shape[2 + i]) for i in range(n)]
    outs = [static_dim(y.shape[2 + i]) if y.shape is not None else None for i in range(n)]
    scale_map = None
    if None in sizes or None in outs:
        if ceil_mode or (any(pads) and not include_pad):
            raise LrpcError(
                f"{node_label(node)}: average pooling with padding or ceil_mode needs static spatial "
                "dims to divide by the right count at the borders; export with a fixed image size"
            )
    else:
        counts, conv_pads = np.ones([1, 1] + [1] * n), list(pads)
        for i in range(n):
            k, s, d = kernel[i], geo["strides"][i], geo["dilations"][i]
            past = (outs[i] - 1) * s + (k - 1) * d + 1 - (sizes[i] + pads[i] + pads[n + i])
            conv_pads[n + i] += max(past, 0)  # ceil_mode: the last window hangs past the end
            per_axis = axis_counts(sizes[i], outs[i], k, s, d, pads[i], pads[n + i], include_pad)
            counts = counts * per_axis.reshape([1, 1] + [-1 if j == i else 1 for j in range(n)])
        geo["pads"] = conv_pads
        if np.any(counts != np.prod(kernel)):
            scale_map = np.where(counts > 0, np.prod(kernel) / np.maximum(counts, 1), 0.0)
    tape = ir.tape.Tape()
    out = _depthwise(tape, graph, node, x, kernel, geo, scale_map)
    replace_node(graph, node, tape.nodes, out)
    border = ", border divisor map" if scale_map is not None else ""
    return f"{node_label(node)} {kernel} → depthwise Conv over {x.shape[1]} channels{border}"


def _reduce_axes(node: ir.Node) -> list[int] | None:
    rank = len(node.inputs[0].shape)
    if node.op_type == "GlobalAveragePool":
        return list(range(2, rank))
    axes = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    axes = node.attributes.get_ints("axes", None) if axes is None else axes.tolist()
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        return None  # axes computed at run time
    if not axes:
        return None if node.attributes.get_int("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


def _global_mean(node: ir.Node, graph: ir.Graph) -> str | None:
    """A mean over spatial axes: one window covering them, per channel."""
    x, y = node.inputs[0], node.outputs[0]
    if x.shape is None or len(x.shape) < 3 or y.shape is None:
        return None
    rank = len(x.shape)
    axes = _reduce_axes(node)
    if axes is None or 0 in axes:
        return None
    kept = [a for a in range(1, rank) if a not in axes]
    channel = 1 if 1 in kept else (kept[0] if len(kept) == 1 else None)
    if channel is None:
        return None  # no single channel axis to keep apart
    perm = [0, channel] + [a for a in range(1, rank) if a != channel]
    if None in [static_dim(x.shape[a]) for a in range(1, rank)] or None in [static_dim(d) for d in y.shape[1:]]:
        return None  # dynamic dims: the mean keeps its own rule (rules/reduce.py), the same z-rule
    kernel = [x.shape[a] if a in axes else 1 for a in perm[2:]]
    tape = ir.tape.Tape()
    source = x
    if perm != list(range(rank)):
        source = tape.op("Transpose", [x], attributes={"perm": perm})
        source.shape, source.type = ir.Shape([x.shape[a] for a in perm]), x.type
    geo = dict(kernel_shape=kernel, strides=[1] * len(kernel), dilations=[1] * len(kernel), pads=[0] * 2 * len(kernel))
    out = _depthwise(tape, graph, node, source, kernel, geo)
    shape_out = [static_dim(d) for d in y.shape]
    conv_shape = [x.shape[0], x.shape[channel]] + [1 if a in axes else x.shape[a] for a in perm[2:]]
    if shape_out[1:] != conv_shape[1:] or perm != list(range(rank)):
        target = np.array([0] + shape_out[1:], np.int64)
        out = tape.op("Reshape", [out, new_constant(graph, f"{node.name or 'mean'}.shape", target)])
    replace_node(graph, node, tape.nodes, out)
    return f"{node_label(node)} over axes {axes} → depthwise Conv {kernel} over {x.shape[channel]} channels"


class AveragePoolToDepthwiseConvPass(Canonization):
    """AveragePool, GlobalAveragePool and spatial ReduceMean → depthwise Conv (weights 1/K)."""

    def rewrite(self, node, graph):
        if node.op_type == "AveragePool":
            return _average_pool(node, graph)
        if node.op_type in ("GlobalAveragePool", "ReduceMean") and node.meta.get(ORIGIN) != "norm":
            return _global_mean(node, graph)  # a norm's mean (passes/recognize_products.py) is no pool
        return None
