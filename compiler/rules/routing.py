"""Routing ops move values without computing with them, so relevance goes back exactly where each
value came from (and sums where one value was copied to several places).

    Concat(x₁, …, xₙ; axis):  R_xᵢ = Split(R_y; axis, sizes = (dim_axis(x₁), …, dim_axis(xₙ)))ᵢ
    Split(x; axis) → y₁…yₙ:   R_x = Concat(R_y₁ or 0, …, R_yₙ or 0; axis)   (an unexplained output: zeros)
    Pad(x, p), constant mode: R_x = Pad(R_y, −p)   (negated pads crop what was added, re-pad what was cut)

Every other routing op f (Slice with any steps, Gather/GatherElements/GatherND, Expand, Tile,
Pad in reflect/edge/wrap mode) is run on the flat positions of x instead of on x:

    src = f(iota(x))    iota(x)[i] = i (int64, x's shape)        src[o]: the element y[o] was read from
    R_x[i] = Σ_{o : src[o] = i} R_y[o]        (ScatterElements with reduction add)

so repeated indices, reflected borders and broadcast copies each return their share to the source.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..builder import Builder
from ..errors import LrpcError, node_label
from ..passes.quantized import is_constant
from .table import relevance_rule


def _int64(b: Builder, values) -> ir.Value:
    return b.const(np.asarray(values, np.int64), dtype=np.int64)


def zeros_like(b: Builder, value: ir.Value) -> ir.Value:
    return b.op("ConstantOfShape", b.op("Shape", value), value=ir.tensor(np.zeros(1, b.dtype.numpy())))


def iota(b: Builder, x: ir.Value) -> ir.Value:
    """The flat (row-major) position of each element of x, as int64 of x's shape."""
    count = b.op("Range", _int64(b, 0), b.op("Size", x), _int64(b, 1))
    return b.op("Reshape", count, b.op("Shape", x))


_WIDENED = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def scatter_add(b: Builder, size: ir.Value, indices: ir.Value, updates: ir.Value) -> ir.Value:
    """out[i] = Σ_{o: indices[o] = i} updates[o], a 1-D tensor of `size` ([1] int64) elements. onnxruntime's
    CPU ScatterElements has no float16/bfloat16 kernel for reduction="add" (a float16 model with a MaxPool
    failed at run time): those sum in float32 and are cast back."""
    wide = b.dtype in _WIDENED
    kind = ir.DataType.FLOAT if wide else b.dtype
    zeros = b.op("ConstantOfShape", size, value=ir.tensor(np.zeros(1, kind.numpy())))
    updates = b.op("Cast", updates, to=kind) if wide else updates
    summed = b.op("ScatterElements", zeros, indices, updates, axis=0, reduction="add")
    return b.op("Cast", summed, to=b.dtype) if wide else summed


def scatter_back(b: Builder, x: ir.Value, src: ir.Value, r: ir.Value) -> ir.Value:
    """R_x[i] = Σ_{o: src[o] = i} r[o], of x's shape (src and r have the same shape)."""
    flat = _int64(b, [-1])
    summed = scatter_add(
        b, b.op("Reshape", b.op("Size", x), flat), b.op("Reshape", src, flat), b.op("Reshape", r, flat)
    )
    return b.op("Reshape", summed, b.op("Shape", x))


def _axis(node: ir.Node, value: ir.Value, default: int | None = None) -> int:
    axis = node.attributes.get_int("axis", default)
    if value.shape is None:
        raise LrpcError(
            f"{node_label(node)}: the rank of '{value.name}' is unknown; run shape inference "
            "or export with static ranks"
        )
    return axis % len(value.shape)


@relevance_rule("Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", exact_gradient=True)
def route_by_index(node, rel_out, b, cfg):
    x, rest = node.inputs[0], [None] * (len(node.inputs) - 1)
    if x.const_value is not None:  # a table looked up by input-dependent indices: no relevance to route
        return [None] + rest
    attrs = {k: a.value for k, a in node.attributes.items()}
    src = b.op(node.op_type, iota(b, x), *node.inputs[1:], **attrs)
    return [scatter_back(b, x, src, rel_out[0])] + rest


@relevance_rule("Pad", exact_gradient=True)
def pad_back(node, rel_out, b, cfg):
    x, pads = node.inputs[0], node.inputs[1]
    mode = node.attributes.get_string("mode", "constant")
    axes = [None, node.inputs[3]] if len(node.inputs) > 3 and node.inputs[3] is not None else []
    rest = [None] * (len(node.inputs) - 1)
    if mode == "constant":  # padded cells hold the constant, not x: their relevance has no source
        return [b.op("Pad", rel_out[0], b.op("Neg", pads), *axes)] + rest
    src = b.op("Pad", iota(b, x), pads, *axes, mode=mode)  # (the float pad value does not apply)
    return [scatter_back(b, x, src, rel_out[0])] + rest


@relevance_rule("Concat", exact_gradient=True)
def concat_back(node, rel_out, b, cfg):
    axis = _axis(node, node.outputs[0])
    dims = [x.shape[axis] if x.shape is not None else None for x in node.inputs]
    if all(isinstance(d, int) for d in dims):
        sizes = _int64(b, dims)
    else:
        sizes = b.op("Concat", *[b.op("Shape", x, start=axis, end=axis + 1) for x in node.inputs], axis=0)
    parts = b.op_multi("Split", rel_out[0], sizes, axis=axis, num_outputs=len(node.inputs))
    return [None if x.const_value is not None else r for x, r in zip(node.inputs, parts)]


@relevance_rule("Split", partial_outputs=True, exact_gradient=True)
def split_back(node, rel_out, b, cfg):
    axis = _axis(node, node.inputs[0], 0)
    parts = [r if r is not None else zeros_like(b, y) for r, y in zip(rel_out, node.outputs)]
    return [b.op("Concat", *parts, axis=axis)] + [None] * (len(node.inputs) - 1)


@relevance_rule("Where", exact_gradient=True)
def where(node, rel_out, b, cfg):
    """Where(c, X, Y): each unit's relevance goes to the operand it was taken from (c is a mask, or a
    condition on the input held fixed): R_X = unbroadcast(R ⊙ c), R_Y = unbroadcast(R ⊙ ¬c)."""
    from .combine import unbroadcast  # combine imports routing

    cond, r, out = node.inputs[0], rel_out[0], node.outputs[0]
    zero = b.op("Mul", r, b.const(0.0))
    return [
        None,
        *(
            None
            if is_constant(v)
            else unbroadcast(b, b.op("Where", cond, *((r, zero) if i == 1 else (zero, r))), v, out)
            for i, v in ((1, node.inputs[1]), (2, node.inputs[2]))
        ),
    ]
