"""Folding a per-channel affine map `a ↦ scale·a + shift` into a linear layer's weights and bias.

Into the layer's output (the map follows z = W x + b; channel o of z):

    W'[o] = scale[o]·W[o],        b' = scale·b + shift

Into the layer's input (the map precedes the layer; channel c of x):

    W'[:, c] = W[:, c]·scale[c],  b' = b + W·shift

The second is exact only when the layer reads no padding: a padded border is 0 after the map, not
`shift` — so Conv with pads is refused there (the caller keeps the map as its own layer).
Layers: Conv and ConvTranspose (channel axis 1, groups respected), Gemm (transA=0), and MatMul of a
2-D input by a 2-D constant (it becomes a Gemm to carry the bias). Each returns False, untouched,
when the layer does not fit. With no layer to fold into, `depthwise_affine` makes the map a layer
of its own: a depthwise 1×1 Conv, weight scale, bias shift, that keeps channels apart.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..geometry import window_geometry
from ..ops import BIAS_INPUT_OPS, DENSE_OPS
from .base import const_array, fresh_name, replace_node
from .fold_constants import new_constant


def _params(layer: ir.Node):
    """(W, b or None) as arrays when both are constants, else None."""
    w = const_array(layer.inputs[1]) if len(layer.inputs) > 1 else None
    has_bias = layer.op_type in BIAS_INPUT_OPS and len(layer.inputs) > 2 and layer.inputs[2] is not None
    b = const_array(layer.inputs[2]) if has_bias else None
    if w is None or (has_bias and b is None) or layer.inputs[0].const_value is not None:
        return None
    return w, b


def _set(graph: ir.Graph, layer: ir.Node, w: np.ndarray, b: np.ndarray) -> None:
    name = layer.name or layer.op_type
    dtype = const_array(layer.inputs[1]).dtype
    layer.replace_input_with(1, new_constant(graph, f"{name}.weight", w.astype(dtype)))
    if len(layer.inputs) < 3:
        layer.resize_inputs(3)
    layer.replace_input_with(2, new_constant(graph, f"{name}.bias", b.astype(dtype)))


def _bias_vector(layer: ir.Node, b, n_out: int) -> np.ndarray | None:
    """The bias as [n_out] (Gemm: beta·C), or None when C is not a per-output bias."""
    if b is None:
        return np.zeros(n_out)
    if layer.op_type == "Gemm":
        if b.size not in (1, n_out) or (b.ndim == 2 and b.shape[0] != 1):
            return None
        b = layer.attributes.get_float("beta", 1.0) * b
    return np.broadcast_to(b.reshape(-1), (n_out,)).astype(np.float64)


def _to_gemm_with_bias(layer: ir.Node) -> None:
    """MatMul(x, W) becomes Gemm(x, W) to carry a bias; the bias written is the whole β·C."""
    layer.op_type = "Gemm"
    layer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)


def _gemm_ok(layer: ir.Node) -> bool:
    if layer.op_type == "MatMul":
        return (
            layer.inputs[0].shape is not None
            and len(layer.inputs[0].shape) == 2
            and const_array(layer.inputs[1]).ndim == 2
        )
    return layer.op_type == "Gemm" and not layer.attributes.get_int("transA", 0)


def _channels(layer: ir.Node, w: np.ndarray) -> tuple[int, int]:
    """(input channels, output channels) of the layer's weight."""
    g = layer.attributes.get_int("group", 1)
    if layer.op_type == "Conv":
        return w.shape[1] * g, w.shape[0]
    if layer.op_type == "ConvTranspose":
        return w.shape[0], w.shape[1] * g
    return w.shape[::-1] if layer.attributes.get_int("transB", 0) else w.shape


def fold_into_output(graph: ir.Graph, layer: ir.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    params = _params(layer)
    if params is None or (layer.op_type in DENSE_OPS and not _gemm_ok(layer)):
        return False
    w, b = params
    if _channels(layer, w)[1] != scale.size:
        return False
    w = w.astype(np.float64)
    if layer.op_type == "Conv":
        w = w * scale.reshape([-1] + [1] * (w.ndim - 1))
    elif layer.op_type == "ConvTranspose":
        g = layer.attributes.get_int("group", 1)
        per_group = w.reshape([g, w.shape[0] // g, w.shape[1], *w.shape[2:]])
        w = (per_group * scale.reshape([g, 1, -1] + [1] * (w.ndim - 2))).reshape(w.shape)
    elif layer.attributes.get_int("transB", 0):
        w = w * scale[:, None]
    else:
        w = w * scale[None, :]
    bias = _bias_vector(layer, b, scale.size)
    if bias is None:
        return False
    if layer.op_type in DENSE_OPS:
        _to_gemm_with_bias(layer)
    _set(graph, layer, w, scale * bias + shift)
    return True


def fold_into_input(graph: ir.Graph, layer: ir.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    params = _params(layer)
    if params is None or layer.op_type == "ConvTranspose" or (layer.op_type != "Conv" and not _gemm_ok(layer)):
        return False
    w, b = params
    if _channels(layer, w)[0] != scale.size:
        return False
    w = w.astype(np.float64)
    if layer.op_type == "Conv":
        if any(window_geometry(layer, layer.inputs[0].shape, list(w.shape[2:]))["pads"]):
            return False
        g = layer.attributes.get_int("group", 1)
        # input channel of W[o, i] is (o // (O/g))·(C/g) + i
        rows = scale.reshape(g, -1)[np.arange(w.shape[0]) // (w.shape[0] // g)]
        shifts = shift.reshape(g, -1)[np.arange(w.shape[0]) // (w.shape[0] // g)]
        extra = [1] * (w.ndim - 2)
        bias = _bias_vector(layer, b, w.shape[0]) + (w * shifts.reshape(*shifts.shape, *extra)).sum(
            axis=tuple(range(1, w.ndim))
        )
        w = w * rows.reshape(*rows.shape, *extra)
    else:
        alpha, trans_b = layer.attributes.get_float("alpha", 1.0), layer.attributes.get_int("transB", 0)
        n_out = w.shape[0] if trans_b else w.shape[1]
        base = _bias_vector(layer, b, n_out)
        if base is None:
            return False
        bias = base + alpha * (w @ shift if trans_b else shift @ w)
        w = w * (scale[None, :] if trans_b else scale[:, None])
        _to_gemm_with_bias(layer)
    _set(graph, layer, w, bias)
    return True


def depthwise_affine(graph: ir.Graph, node: ir.Node, x: ir.Value, scale, shift) -> None:
    """Replace `node`, computing scale·x + shift per channel (axis 1) of x, by a depthwise 1×1 Conv."""
    rank, dtype, name = len(x.shape), x.dtype.numpy(), fresh_name(graph, node.name or "batchnorm", node)
    spatial = max(rank - 2, 1)
    weight = new_constant(graph, f"{name}.diag_weight", scale.reshape([-1, 1] + [1] * spatial).astype(dtype))
    bias = new_constant(graph, f"{name}.bias", shift.astype(dtype))
    tape = ir.tape.Tape()
    axis = new_constant(graph, f"{name}.axis", np.array([2], np.int64))
    source = tape.op("Unsqueeze", [x, axis]) if rank == 2 else x
    y = tape.op(
        "Conv", [source, weight, bias], attributes={"kernel_shape": [1] * spatial, "group": scale.size}, name=name
    )
    if rank == 2:
        y = tape.op("Squeeze", [y, axis])
    replace_node(graph, node, tape.nodes, y)
