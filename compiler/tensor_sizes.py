"""Bytes of every tensor of a graph at a batch size: shapes inferred with the inputs' free dims fixed.

    bytes(t) = prod(shape(t)) · itemsize(dtype(t))

The inputs' free dims are fixed as `lrpc bench` feeds them (axis 0: the batch, any other: 1), then onnx
shape inference runs with data propagation. Where it leaves a tensor unshaped because a shape is computed
by ops onnx does not propagate values through (Size, Where, Range, Equal on shape vectors: the class
token's Expand of a ViT export, the flat scatter of a max pool's relevance), the small tensors that
depend on shapes and constants alone are evaluated (onnx.reference, one node at a time), their nodes
replaced by those constants, and inference runs again, until nothing new is known. MaxUnpool's output
shape is taken from its Shape input. A tensor whose shape stays unknown is left out of the sizes.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from .ops import RANDOM_OPS

_SMALL = 4096  # initializers with more elements go to inference as typed inputs, without their data
_ROUNDS = 8  # rounds of evaluating shape values and inferring again; a chain of computed shapes resolves in 2–3


def _dtype_bytes(elem_type: int) -> int | None:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None


def _external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL


def _dims(value: onnx.ValueInfoProto) -> list[int] | None:
    """The tensor's dims; None where its type, rank or any dim is unknown."""
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not t.HasField("shape") or not t.elem_type:
        return None
    if any(not d.HasField("dim_value") for d in t.shape.dim):
        return None
    return [d.dim_value for d in t.shape.dim]


def value_bytes(value: onnx.ValueInfoProto) -> int | None:
    """Bytes of a tensor from its type and shape; None where the dtype or any dim is unknown."""
    dims = _dims(value)
    itemsize = None if dims is None else _dtype_bytes(value.type.tensor_type.elem_type)
    return None if itemsize is None else int(np.prod(dims)) * itemsize


def _fix_dims(values, batch: int) -> None:
    """Input dims as lrpc bench feeds them: a dynamic axis 0 → batch, any other dynamic axis → 1."""
    for value in values:
        for k, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                dim.ClearField("dim_param")
                dim.dim_value = batch if k == 0 else 1


def _unpooled_shapes(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    """MaxUnpool outputs whose output_shape is Shape(t) of a known t: onnx takes no value from that input,
    so the output and everything after it would stay unknown."""
    known = {v.name: v for v in [*graph.value_info, *graph.input] if value_bytes(v) is not None}
    producer = {name: node for node in graph.node for name in node.output}
    found = {}
    for node in graph.node:
        shape = producer.get(node.input[2]) if node.op_type == "MaxUnpool" and len(node.input) > 2 else None
        if shape is not None and shape.op_type == "Shape" and not shape.attribute and shape.input[0] in known:
            t = known[shape.input[0]].type.tensor_type
            found[node.output[0]] = helper.make_tensor_value_info(
                node.output[0], t.elem_type, [d.dim_value for d in t.shape.dim]
            )
    return found


def _infer(shell: onnx.ModelProto) -> onnx.ModelProto:
    inferred = shape_inference.infer_shapes(shell, data_prop=True)
    unpooled = _unpooled_shapes(inferred.graph)
    if not unpooled:
        return inferred
    for value in inferred.graph.value_info:
        if value.name in unpooled:
            value.CopyFrom(unpooled.pop(value.name))
    inferred.graph.value_info.extend(unpooled.values())
    return shape_inference.infer_shapes(inferred, data_prop=True)


def _shape_value(node: onnx.NodeProto, dims: list[int]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(dims)), dtype=np.int64)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return np.array(dims[slice(attrs.get("start", 0), attrs.get("end"))], dtype=np.int64)


# ops of shape arithmetic whose output has at most max(∏, Σ) of their inputs' elements
_BOUNDED_BY_INPUTS = {
    "Abs", "Add", "And", "Cast", "Ceil", "Clip", "Concat", "Div", "Equal", "Flatten", "Floor", "Gather",
    "Greater", "GreaterOrEqual", "Identity", "Less", "LessOrEqual", "Max", "Min", "Mod", "Mul", "Neg", "Not",
    "Or", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSum", "Reshape", "Sign", "Slice", "Squeeze", "Sub",
    "Transpose", "Unsqueeze", "Where",
}  # fmt: skip


def _output_bound(node: onnx.NodeProto, values: dict, dims: dict) -> float:
    """An upper bound of the elements of `node`'s largest output, from the shapes inference knows or the input
    values; inf where there is none, so that the node is not evaluated."""
    known = [dims.get(name) for name in node.output if name]
    if known and all(d is not None for d in known):
        return max(float(np.prod(d)) for d in known)
    inputs = [values[name] for name in node.input if name]
    sizes = [float(np.size(v)) for v in inputs]
    if node.op_type == "ConstantOfShape":
        return float(np.prod(np.abs(inputs[0]))) if inputs else 1.0
    if node.op_type in ("Expand", "Tile") and len(inputs) == 2:
        return sizes[0] * float(np.prod(np.abs(inputs[1])))
    if node.op_type == "Range" and len(inputs) == 3 and inputs[2] != 0:
        return max(0.0, float(np.ceil((inputs[1] - inputs[0]) / inputs[2])))
    if node.op_type == "NonZero" and inputs:
        return sizes[0] * max(1, np.ndim(inputs[0]))
    if node.op_type in _BOUNDED_BY_INPUTS:
        return max(float(np.prod(sizes)), sum(sizes))
    return math.inf


def _shape_values(graph: onnx.GraphProto, opset: int) -> dict[str, np.ndarray]:
    """The small tensors computable from shapes and small constants alone, by name; a node whose output
    may be large is not evaluated."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dims = {v.name: _dims(v) for v in [*graph.input, *graph.value_info]}
    for node in graph.node:
        if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx") and dims.get(node.input[0]):
            outputs = [_shape_value(node, dims[node.input[0]])]
        elif (
            node.domain in ("", "ai.onnx")
            and node.op_type not in RANDOM_OPS
            and all(not name or name in values for name in node.input)
            and _output_bound(node, values, dims) <= _SMALL
        ):
            feeds = {name: values[name] for name in node.input if name}
            try:
                outputs = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
            except Exception:  # an op the reference evaluator lacks: its outputs stay unknown
                continue
        else:
            continue
        for name, value in zip(node.output, outputs):
            if name and np.size(value) <= _SMALL:
                values[name] = np.asarray(value)
    return values


def _with_values_folded(inferred: onnx.ModelProto, opset: int) -> onnx.ModelProto | None:
    """`inferred` with the nodes whose outputs are all computable replaced by their values, where that makes
    an unknown tensor known after inference; None where it cannot."""
    graph = inferred.graph
    values = _shape_values(graph, opset)
    unknown = {v.name for v in graph.value_info if value_bytes(v) is None}
    unknown |= {o for n in graph.node for o in n.output if o} - {v.name for v in graph.value_info}
    fold = [n for n in graph.node if n.output and all(not o or o in values for o in n.output)]
    folded = {o for n in fold for o in n.output if o}
    waiting = {o for n in graph.node if folded.intersection(n.input) for o in n.output}  # their readers' outputs
    if not (folded | waiting) & unknown:
        return None
    constants = [numpy_helper.from_array(values[name], name) for name in sorted(folded)]
    kept = [n for n in graph.node if not (n.output and all(not o or o in folded for o in n.output))]
    infos = [v for v in graph.value_info if v.name not in folded and value_bytes(v) is not None]
    new = helper.make_graph(kept, graph.name, list(graph.input), list(graph.output), [*graph.initializer, *constants])
    new.value_info.extend(infos)
    shell = helper.make_model(new, opset_imports=inferred.opset_import, ir_version=inferred.ir_version)
    shell.functions.extend(inferred.functions)
    return shell


def _inline(t: onnx.TensorProto, base_dir: str | None) -> onnx.TensorProto:
    """`t` with its data read from beside the model where it lies in another file and `base_dir` is known."""
    if not _external(t) or base_dir is None:
        return t
    copy = onnx.TensorProto()
    copy.CopyFrom(t)
    try:
        external_data_helper.load_external_data_for_tensor(copy, base_dir)
    except Exception:  # unreadable (missing, short, outside the folder): sized from its dims, values unknown
        return t
    copy.data_location = onnx.TensorProto.DEFAULT
    del copy.external_data[:]
    return copy


def shapes_at_batch(model: onnx.ModelProto, batch: int, base_dir: str | None = None) -> onnx.ModelProto:
    """A data-light copy of `model` with its inputs' dims fixed at `batch` and every shape inferred (large
    initializers become typed inputs: shapes need their dims, not their values; a small one whose data lies
    in another file is read from `base_dir`, or else typed too). Nodes whose outputs were
    evaluated are constants in it."""
    inline = [_inline(t, base_dir) for t in model.graph.initializer if np.prod(t.dims) <= _SMALL]
    inline = [t for t in inline if not _external(t)]
    names = {t.name for t in inline}
    typed = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in model.graph.initializer
        if t.name not in names
    ]
    outputs = [helper.make_value_info(o.name, onnx.TypeProto()) for o in model.graph.output]  # re-inferred
    graph = helper.make_graph(model.graph.node, model.graph.name, [*model.graph.input, *typed], outputs, inline)
    _fix_dims(graph.input[: len(model.graph.input)], batch)
    shell = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    shell.functions.extend(model.functions)
    inferred = _infer(shell)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    for _ in range(_ROUNDS):
        shell = _with_values_folded(inferred, opset)
        if shell is None:
            break
        inferred = _infer(shell)
    return inferred


def tensor_sizes(model: onnx.ModelProto, batch: int, base_dir: str | None = None) -> dict[str, int]:
    """Bytes of every tensor whose shape is known at `batch` (initializers from their dims); `base_dir`: the
    folder of a model loaded without its external data."""
    inferred = shapes_at_batch(model, batch, base_dir)
    sizes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        size = value_bytes(value)
        if size is not None:
            sizes[value.name] = size
    for t in [*inferred.graph.initializer, *model.graph.initializer]:
        itemsize = _dtype_bytes(t.data_type)
        if itemsize is not None:
            sizes[t.name] = int(np.prod(t.dims)) * itemsize
    return sizes
