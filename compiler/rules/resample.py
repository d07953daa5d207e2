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
last axis; other axes are transposed there first). Sizes computed at run time from the input's own
shape and constants (Concat(Shape(x)[:2], [H, W]) under a dynamic batch, as timm's ghostnetv2 exports
them) are read symbolically: each resized axis's out size is static, the batch passes unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..builder import Builder
from ..errors import LrpcError, node_label
from ..passes.fold_constants import shape_elements
from .table import relevance_rule

_KEPT_ATTRIBUTES = (
    "mode",
    "coordinate_transformation_mode",
    "nearest_mode",
    "cubic_coeff_a",
    "exclude_outside",
    "extrapolation_value",
    "antialias",
)


def _const_input(node: ir.Node, index: int):
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        return None
    if value.const_value is None:
        raise LrpcError(f"{node_label(node)}: its scales/sizes are computed at run time; lrpc needs them constant")
    array = value.const_value.numpy().reshape(-1)
    return array if array.size else None


def _sizes(node: ir.Node) -> list | None:
    """The sizes: constant, or computed at run time from shapes — Concat(Shape(x)[:2], [H, W]) under a
    dynamic batch — where each element is static or the input's own dim (a symbolic dim's name)."""
    value = node.inputs[3] if len(node.inputs) > 3 else None
    if value is None or value.const_value is not None:
        sizes = _const_input(node, 3)
        return None if sizes is None else [int(n) for n in sizes]
    elements, x = shape_elements(value), node.inputs[0].shape
    dims = [d if isinstance(d, int) else d.value for d in x]
    if (
        elements is None
        or len(elements) != len(dims)
        or not all(isinstance(e, int) or e == d for e, d in zip(elements, dims))
    ):
        raise LrpcError(
            f"{node_label(node)}: its sizes are computed at run time, not from the input's own shape "
            "and constants; lrpc needs the resized axes' sizes static (export with a fixed input size)"
        )
    return elements


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
    square = b.op(
        "ConstantOfShape",
        b.const(np.array([n_in, n_in], np.int64), dtype=np.int64),
        value=ir.tensor(np.zeros(1, b.dtype.numpy())),
    )
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


def _resized_axes(node: ir.Node, scales, sizes) -> list[tuple[int, int, int]]:
    """(axis, in size, out size) of each axis the node resizes (`sizes`: ints or symbolic dims' names)."""
    x, y = node.inputs[0], node.outputs[0]
    rank, listed = len(x.shape), node.attributes.get_ints("axes", None)
    listed = None if listed is None else sorted(a % rank for a in listed)
    changed = []
    for k, d in enumerate(listed if listed is not None else range(rank)):
        n_in = x.shape[d] if isinstance(x.shape[d], int) else x.shape[d].value
        n_out = (
            sizes[k if listed is not None and len(sizes) == len(listed) else d]
            if sizes is not None
            else y.shape[d]
            if y.shape is not None and len(y.shape) == rank
            else None
        )
        n_out = n_out.value if isinstance(n_out, ir.SymbolicDim) else n_out
        if scales is not None and float(scales[d]) == 1.0:
            continue
        if scales is None and n_out is not None and n_in is not None and n_in == n_out:
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


def resize_axes(node: ir.Node) -> tuple:
    """(scales, [(axis, in size, out size), …]) of a Resize lrpc inverts; raises for the forms it does not."""
    check_resize(node)
    rank = len(node.inputs[0].shape)
    scales = _const_input(node, 2)
    if scales is not None and node.attributes.get_ints("axes", None) is not None:  # opset 18: scales of `axes`
        full = np.ones(rank, np.float32)
        full[[a % rank for a in node.attributes.get_ints("axes")]] = scales
        scales = full
    sizes = None if scales is not None else _sizes(node)
    if scales is None and sizes is None:
        raise LrpcError(f"{node_label(node)}: neither scales nor sizes given")
    return scales, _resized_axes(node, scales, sizes)


def resize_adjoint(b: Builder, node: ir.Node, t: ir.Value, axes: tuple) -> ir.Value:
    """Aᵀ t, axis by axis, for `axes` = resize_axes(node)."""
    scales, changed = axes
    for d, n_in, n_out in changed:
        t = _adjoint_along(b, t, _probe(b, node, d, n_in, n_out, scales), d, len(node.inputs[0].shape))
    return t


@relevance_rule("Resize")
def resize_back(node, rel_out, b, cfg):
    x, y, r = node.inputs[0], node.outputs[0], rel_out[0]
    nearest = node.attributes.get_string("mode", "nearest") == "nearest"
    axes = resize_axes(node)
    t = resize_adjoint(b, node, r if nearest else b.divide(r, y, cfg.rule_for(node).eps), axes)
    return [t if nearest else b.op("Mul", x, t)] + [None] * (len(node.inputs) - 1)
