"""Constant folding, including the shape chains exporters put in front of Reshape.

1. A node whose inputs are all constants is evaluated once (onnx's reference evaluator) and its
   outputs become initializers: `y = f(c₁, …, cₙ)` → `y := const`.
2. `Shape(x)` with a fully static shape becomes a constant, and so does any Gather/Slice/Concat/… of shape
   elements that are all static (`x.shape[2:]` of a tensor whose batch alone is dynamic).
3. A Reshape whose target shape is computed from `Shape(x)` (the `x.view(x.size(0), -1)` pattern,
   Shape → Gather → Unsqueeze → Concat [→ Cast]) is evaluated symbolically: each element is an int or
   a symbolic dim. If all are ints it is a constant; a single symbolic element becomes 0 ("copy this
   dim", when the data tensor has the same dim at that position) or -1 ("infer it"). The dynamic batch
   dimension therefore stays dynamic.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import onnx_ir as ir

from ..errors import LrpcError, node_label

# Ops never folded: random or stateful, or too large to be worth materialising as a constant.
_NEVER_FOLD = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
    "QuantizeLinear",
    "DequantizeLinear",
}  # a QDQ model keeps its quantized weights (passes/quantized.py)


MOST_FOLDED = 2**28  # elements: a constant computed from constants beyond this (1 GiB of float32) is refused


def _folded_elements(node: ir.Node) -> int | None:
    """How many elements folding `node` would materialise, from its inferred output shapes (None: unknown)."""
    if node.op_type == "ConstantOfShape":
        return int(np.prod(_const(node.inputs[0]), dtype=np.float64))
    shapes = [v.shape for v in node.outputs]
    if any(s is None or not all(isinstance(d, int) for d in s) for s in shapes):
        return None
    return int(sum(np.prod(list(s), dtype=np.float64) for s in shapes))


def _check_folded_size(node: ir.Node) -> None:
    count = _folded_elements(node)
    if count is not None and count > MOST_FOLDED:
        raise LrpcError(
            f"{node_label(node)} computes a constant of {count:.3g} elements from constants; lrpc "
            f"evaluates such nodes once and refuses results over {MOST_FOLDED:.3g} elements "
            "(1 GiB of float32): the model cannot run as exported"
        )


def _const(value: ir.Value | None):
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _evaluate(node: ir.Node, opset: int) -> list[np.ndarray]:
    """Run one node on its constant inputs with onnx's reference evaluator."""
    proto = ir.serde.serialize_node(node)
    names = [v.name for v in node.inputs if v is not None]
    feeds = {v.name: _const(v) for v in node.inputs if v is not None}
    graph = onnx.helper.make_graph(
        [proto],
        "fold",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in names],
        [onnx.helper.make_tensor_value_info(v.name, onnx.TensorProto.UNDEFINED, None) for v in node.outputs],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return onnx.reference.ReferenceEvaluator(model).run(None, feeds)


def new_constant(graph: ir.Graph, base_name: str | None, array: np.ndarray) -> ir.Value:
    """Register `array` as an initializer under a fresh name derived from `base_name`."""
    array = np.asarray(array)
    name, k = f"{base_name or 'const'}__folded", 0
    while name in graph.initializers:
        k += 1
        name = f"{base_name or 'const'}__folded{k}"
    const = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=ir.tensor(array),
    )
    graph.register_initializer(const)
    return const


def _replace_with_constant(graph: ir.Graph, value: ir.Value, array: np.ndarray) -> None:
    value.replace_all_uses_with(new_constant(graph, value.name, array), replace_graph_outputs=False)


def _symbolic_shape_value(value: ir.Value, known: dict) -> list | None:
    """The elements of a 1-D int shape tensor: ints and symbolic dims, or None if unknown."""
    if value in known:
        return known[value]
    array = _const(value)
    if array is not None and array.ndim <= 1 and array.dtype.kind == "i":
        return [int(v) for v in np.atleast_1d(array)]
    return None


def _fold_shape_op(node: ir.Node, known: dict) -> list | None:
    """Symbolic result of Shape/Gather/Unsqueeze/Squeeze/Concat/Cast/Slice on shape vectors."""
    op = node.op_type
    if op == "Shape":
        shape = node.inputs[0].shape
        if shape is None:
            return None
        dims = list(shape.dims)
        start = node.attributes.get_int("start", 0)
        end = node.attributes.get_int("end", len(dims))
        return [d if isinstance(d, int) else d.value for d in dims[start:end]]
    inputs = [_symbolic_shape_value(v, known) if v is not None else None for v in node.inputs]
    if op == "Gather" and inputs[0] is not None and _const(node.inputs[1]) is not None:
        indices = _const(node.inputs[1])
        picked = [inputs[0][int(i)] for i in np.atleast_1d(indices)]
        return picked  # scalar indices give a 1-element list; Unsqueeze keeps it
    if op in ("Unsqueeze", "Squeeze", "Cast") and inputs[0] is not None:
        return inputs[0]
    if op == "Concat" and all(i is not None for i in inputs):
        return [d for part in inputs for d in part]
    if op == "Slice" and inputs[0] is not None and all(_const(v) is not None for v in node.inputs[1:]):
        starts, ends = (int(_const(node.inputs[i])[0]) for i in (1, 2))
        steps = int(_const(node.inputs[4])[0]) if len(node.inputs) > 4 else 1
        return inputs[0][slice(starts, ends, steps)]
    return None


def shape_elements(value: ir.Value) -> list | None:
    """The elements of a 1-D shape tensor computed by a chain of Shape/Gather/Slice/Concat/… (ints, and
    the names of symbolic dims), or None where the chain holds anything else."""
    producer = value.producer()
    if value.const_value is not None or producer is None:
        return _symbolic_shape_value(value, {})
    known = {}
    if producer.op_type != "Shape":  # Shape reads its input's dims, not its values
        for v in producer.inputs:
            elements = shape_elements(v) if v is not None else None
            if elements is not None:
                known[v] = elements
    return _fold_shape_op(producer, known)


def _static_shape_value(value: ir.Value, elements: list) -> np.ndarray | None:
    """The shape elements as a constant of `value`'s type and rank, when every one is a known int (the
    static dims of a tensor whose batch is dynamic: timm's same-padding and resize sizes read them)."""
    if not all(isinstance(d, int) for d in elements) or value.shape is None or value.dtype is None:
        return None
    if len(value.shape) > 1 or (len(value.shape) == 0 and len(elements) != 1):
        return None
    return np.array(elements).astype(value.dtype.numpy()).reshape([len(elements)] if len(value.shape) else [])


def _reshape_target(node: ir.Node, elements: list) -> np.ndarray | None:
    symbolic = [i for i, d in enumerate(elements) if not isinstance(d, int)]
    if not symbolic:
        return np.array(elements, dtype=np.int64)
    if len(symbolic) > 1:
        return None
    (i,) = symbolic
    data_shape = node.inputs[0].shape
    same_dim = (
        data_shape is not None
        and i < len(data_shape)
        and not isinstance(data_shape[i], int)
        and data_shape[i].value == elements[i]
    )
    out = [d if isinstance(d, int) else 0 for d in elements]
    if same_dim and node.attributes.get_int("allowzero", 0) == 0 and 0 not in elements:
        return np.array(out, dtype=np.int64)
    if -1 not in elements:
        out[i] = -1
        return np.array(out, dtype=np.int64)
    return None


class FoldConstantsPass(ir.passes.InPlacePass):
    """Evaluate constant subgraphs and shape chains once, at compile time; with shape inference in turns
    while Pads or Resizes with computed amounts are left and the last round folded some of them (at most 16
    rounds): a shape chain folded to constants gives the next tensor a static shape, whose own chain then
    folds (timm's same-padding before each strided conv). Every other model takes one round."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from .shape_inference import StrictShapeInferencePass

        modified, pending = False, _computed_geometry(model.graph)
        for _ in range(16):
            folded, shapes_folded = _fold_once(model)
            modified |= folded
            if not shapes_folded:
                break
            StrictShapeInferencePass().call(model)  # the folded shapes give later tensors static shapes
            left = _computed_geometry(model.graph)
            if not left or left >= pending:  # another round can only help a Pad or Resize whose amounts are
                break  # still computed, and only while the last round folded some
            pending = left
        return ir.passes.PassResult(model, modified)


def _has_subgraph(node: ir.Node) -> bool:
    """If/Loop/Scan read values of the enclosing graph inside their bodies: never folded from their inputs."""
    return any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())


def _computed_geometry(graph: ir.Graph) -> int:
    """How many Pads and Resizes take their pads / scales / sizes from a computation, not a constant."""
    return sum(
        any(v is not None and v.const_value is None for v in n.inputs[1:])
        for n in graph
        if n.op_type in ("Pad", "Resize")
    )


def _fold_once(model: ir.Model) -> tuple[bool, bool]:
    """One round of folding in graph order: (whether anything changed, whether a shape expression or a
    Reshape target did)."""
    graph, opset = model.graph, model.opset_imports[""]
    modified, shapes, known = False, False, {}
    for node in list(graph):
        inputs = [v for v in node.inputs if v is not None]
        if (
            node.op_type not in _NEVER_FOLD
            and inputs
            and all(v.const_value is not None for v in inputs)
            and not _has_subgraph(node)
        ):
            _check_folded_size(node)
            for value, array in zip(node.outputs, _evaluate(node, opset)):
                _replace_with_constant(graph, value, array)
            modified = True
            continue
        if node.op_type in ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice"):
            elements = _fold_shape_op(node, known)
            if elements is not None and len(node.outputs) == 1:
                static = _static_shape_value(node.outputs[0], elements)
                if static is not None:
                    _replace_with_constant(graph, node.outputs[0], static)
                    modified = shapes = True
                else:
                    known[node.outputs[0]] = elements
        if node.op_type == "Reshape" and node.inputs[1] in known:
            target = _reshape_target(node, known[node.inputs[1]])
            if target is not None:
                node.replace_input_with(1, new_constant(graph, node.inputs[1].name, target))
                modified = shapes = True
    return modified, shapes
