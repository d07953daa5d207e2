"""Resize: relevance goes back to the inputs each output was interpolated from, in proportion to
their contributions. (Upsample, deprecated since opset 10, is a Resize after onnx.version_converter.)

Resize is linear in x and separable: along each resized axis d it applies a matrix A_d
[out_d, in_d] (nearest: one 1 per row; linear: two non-negative weights summing to 1; cubic: four,
some negative). With Aᵀ the adjoint of the whole map (A_dᵀ along each resized axis):

    nearest:         R_x = Aᵀ R_y                                (pure routing: each output has one source)
    linear, cubic:   R_x = x ⊙ Aᵀ(R_y / stab(y)),   y = A x      (the z-rule on the interpolation weights;
                                                                 stab as in combine.py, ε = the rule eps)

A_d is not re-derived from the spec: it is Resize itself applied to a probe, the identity
arranged as P[i, 0, …, j, …, 0] = δᵢⱼ (basis index on axis 0, basis vector on axis d, size 1
elsewhere) with the node's attributes and its scale (or size) for axis d only. Its output
Y[i, 0, …, o, …] = A_d[o, i] is A_dᵀ, exactly as the runtime interpolates; being constant, it is
folded when the session is created. Aᵀ s is then a MatMul with A_d (last axis) or A_dᵀ (second to
last axis; other axes are transposed there first).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..builder import Builder
from ..errors import LrpcError, node_label
from .table import relevance_rule

_KEPT_ATTRIBUTES = ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                    "exclude_outside", "extrapolation_value", "antialias")


def _const_input(node: ir.Node, index: int):
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        return None
    if value.const_value is None:
        raise LrpcError(f"{node_label(node)}: its scales/sizes are computed at run time; lrpc needs them constant")
    array = value.const_value.numpy().reshape(-1)
    return array if array.size else None


def _probe(b: Builder, node: ir.Node, d: int, n_in: int, n_out: int, scales) -> ir.Value:
    """A_dᵀ [in_d, out_d] of axis d, computed by the runtime's own Resize on an identity probe."""
    rank = len(node.inputs[0].shape)
    shape = [1] * rank
    shape[0] = shape[d] = n_in
    attrs = {k: node.attributes[k].value for k in _KEPT_ATTRIBUTES if k in node.attributes}
    if scales is not None:
        probe_scales = np.ones(rank, np.float32)
        probe_scales[d] = scales[d]
        inputs = [None, b.const(probe_scales, dtype=np.float32)]
    else:
        probe_sizes = np.array(shape, np.int64)
        probe_sizes[d] = n_out
        inputs = [None, None, b.const(probe_sizes, dtype=np.int64)]
    square = b.op("ConstantOfShape", b.const(np.array([n_in, n_in], np.int64), dtype=np.int64),
                  value=ir.tensor(np.zeros(1, b.dtype.numpy())))
    eye = b.op("Reshape", b.op("EyeLike", square), b.const(np.array(shape, np.int64), dtype=np.int64))
    y = b.op("Resize", eye, *inputs, **attrs)
    return b.op("Reshape", y, b.const(np.array([n_in, n_out], np.int64), dtype=np.int64))


def _adjoint_along(b: Builder, s: ir.Value, a_t: ir.Value, d: int, rank: int) -> ir.Value:
    """Σ_o A[o, i] s[…, o, …] along axis d: [.., out_d, ..] → [.., in_d, ..] (a_t = Aᵀ)."""
    if d == rank - 1:
        return b.op("MatMul", s, b.op("Transpose", a_t, perm=[1, 0]))
    if d == rank - 2:
        return b.op("MatMul", a_t, s)
    swap = list(range(rank))
    swap[d], swap[rank - 2] = rank - 2, d
    return b.op("Transpose", b.op("MatMul", a_t, b.op("Transpose", s, perm=swap)), perm=swap)


def _resized_axes(node: ir.Node, scales) -> list[tuple[int, int, int]]:
    """(axis, in size, out size) of each axis the node resizes."""
    x, y = node.inputs[0], node.outputs[0]
    rank, listed = len(x.shape), node.attributes.get_ints("axes", None)
    changed = []
    for d in sorted(a % rank for a in listed) if listed is not None else range(rank):
        n_in = x.shape[d]
        n_out = y.shape[d] if y.shape is not None and len(y.shape) == len(x.shape) else None
        if scales is not None and float(scales[d]) == 1.0:
            continue
        if scales is None and n_out is not None and (n_in == n_out if isinstance(n_in, int)
                                                     else n_in.value is not None and n_in.value == n_out.value):
            continue
        if d == 0 or not isinstance(n_in, int) or not isinstance(n_out, int):
            raise LrpcError(f"{node_label(node)}: resizing axis {d} needs static sizes of a non-batch axis")
        changed.append((d, n_in, n_out))
    return changed


def check_resize(node) -> None:
    """The Resize forms lrpc inverts: any mode, no crop, stretched, of known rank."""
    if node.attributes.get_string("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        raise LrpcError(f"{node_label(node)}: tf_crop_and_resize adds a constant outside the crop; not supported")
    if node.attributes.get_string("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise LrpcError(f"{node_label(node)}: keep_aspect_ratio_policy other than 'stretch' is not supported")
    if node.inputs[0].shape is None:
        raise LrpcError(f"{node_label(node)}: the rank of its input is unknown")


@relevance_rule("Resize")
def resize_back(node, rel_out, b, cfg):
    x, y, r = node.inputs[0], node.outputs[0], rel_out[0]
    mode = node.attributes.get_string("mode", "nearest")
    check_resize(node)
    rank = len(x.shape)
    scales = _const_input(node, 2)
    if scales is not None and node.attributes.get_ints("axes", None) is not None:  # opset 18: scales of `axes`
        full = np.ones(rank, np.float32)
        full[[a % rank for a in node.attributes.get_ints("axes")]] = scales
        scales = full
    if scales is None and _const_input(node, 3) is None:
        raise LrpcError(f"{node_label(node)}: neither scales nor sizes given")
    t = r if mode == "nearest" else b.divide(r, y, cfg.rule_for(node).eps)
    for d, n_in, n_out in _resized_axes(node, scales):
        t = _adjoint_along(b, t, _probe(b, node, d, n_in, n_out, scales), d, rank)
    return [t if mode == "nearest" else b.op("Mul", x, t)] + [None] * (len(node.inputs) - 1)
