"""`lower_method`: build a gradient-family attribution into the graph, beside the model's forward pass.

gradient, inputxgradient, guidedbackprop and deconvnet walk back once from the explained tensor
(backward.py). integratedgradients and smoothgrad need the gradient at K other inputs; the forward
subgraph from the inputs to the explained tensor is cloned once onto a stacked input

    X̃ = reshape([x̃₁; …; x̃_K], [K·batch, …])     x̃ₖ = x₀ + αₖ(x − x₀)   (IG, K = steps, αₖ = k/K)
                                                 x̃ₖ = x + εₖ            (smoothgrad, K = samples)

(row k·batch + n holds sample n's k-th point), the seed is tiled K times along the batch, one
backward walk through the clone gives ∇f at every point, and the mean over k is taken:

    IG = (x − x₀) ⊙ 1/K Σₖ ∇f(x̃ₖ)            smoothgrad = 1/K Σₖ ∇f(x̃ₖ)

The model's own outputs (and the explained unit, e.g. each sample's argmax) come from the unmodified
input. Smoothgrad draws εₖ = σ·zₖ with zₖ from RandomNormalLike(seed) and σ = noise·(max x − min x)
per sample, ε_K = 0 (Zennit's convention, spec.py); a fixed seed makes a new session draw the same
sequence (onnxruntime keeps one generator per session, so successive runs draw fresh noise). With
noise_input=1 the graph instead takes ε [K, batch, …] as an input `noise` (`noise_<input>` for a
model with several float inputs) and adds it as given. Likewise integratedgradients with
baseline_input=1 takes x₀ as an input `baseline` shaped like x (e.g. a blurred image per sample).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..builder import Builder
from ..errors import LrpcError, node_label
from ..targets import upstream
from ..walk import depends_on
from .backward import backward
from .spec import Method, parse_method

NOISE_INPUT_NAME = "noise"
BASELINE_INPUT_NAME = "baseline"
_DIM_PREFIX = "lrpc_points"
_CLONE_SCOPE = "grad/points/"


def _int64(b: Builder, values) -> ir.Value:
    return b.const(np.asarray(values, np.int64), dtype=np.int64)


def lower_method(
    graph: ir.Graph, start: ir.Value, seed: ir.Value, spec: str | Method, b: Builder, inputs: list[ir.Value]
) -> dict:
    """{input: attribution value (None where the gradient does not reach)} for method `spec`, the
    gradient seeded with `seed` (the selection weights, shaped like `start`) at `start`."""
    method = parse_method(spec)
    nodes = list(graph)
    if method.path is None:
        grads = backward(nodes, start, seed, inputs, b, method.relu)
        return {x: b.op("Mul", x, g) if method.times_input and g is not None else g for x, g in grads.items()}
    for x in inputs:
        if x.shape is None:
            raise LrpcError(f"{method.name}: the rank of input '{x.name}' is unknown; export with static ranks")
    count = method.get("steps") if method.path == "integrated" else method.get("samples")
    b.scope = f"grad/{method.name}"
    baselines = {x: _baseline(b, graph, x, inputs, method) for x in inputs} if method.path == "integrated" else {}
    points = {
        x: _path_points(b, x, baselines[x], method) if baselines else _noisy_points(b, graph, x, inputs, method)
        for x in inputs
    }
    mapping, copies = _clone_forward(graph, nodes, start, points, b)
    if start not in mapping:
        return {x: None for x in inputs}
    tiled = b.op("Tile", seed, _int64(b, [count] + [1] * (len(start.shape) - 1)))
    grads = backward(copies, mapping[start], tiled, list(points.values()), b, method.relu)
    b.scope = f"grad/{method.name}"
    result = {}
    for x in inputs:
        g = grads[points[x]]
        if g is not None:
            stacked = b.op("Reshape", g, b.op("Concat", _int64(b, [count]), b.op("Shape", x), axis=0))
            g = b.scale(b.op("ReduceSum", stacked, _int64(b, [0]), keepdims=0), 1.0 / count)
            if method.path == "integrated":
                g = b.op("Mul", g, b.op("Sub", x, baselines[x]))
        result[x] = g
    return result


def _stack(b: Builder, stacked: ir.Value, x: ir.Value) -> ir.Value:
    """[K, batch, …] → [K·batch, …]."""
    return b.op("Reshape", stacked, b.op("Concat", _int64(b, [-1]), b.op("Shape", x, start=1), axis=0))


def _graph_input(graph, x: ir.Value, inputs, base: str, shape: list, what: str) -> ir.Value:
    """A new float graph input `base` (`base_<input>` when the model has several float inputs)."""
    name = base if len(inputs) == 1 else f"{base}_{x.name}"
    if any(v.name == name for v in graph.inputs):
        raise LrpcError(f"the model already has an input named '{name}'; {what} adds one")
    value = ir.Value(name=name, shape=ir.Shape(shape), type=x.type)
    graph.inputs.append(value)
    return value


def _baseline(b: Builder, graph, x: ir.Value, inputs, method: Method) -> ir.Value:
    """x₀: the constant `baseline`, or a graph input `baseline` shaped like x (baseline_input=1)."""
    if method.get("baseline_input"):
        return _graph_input(
            graph, x, inputs, BASELINE_INPUT_NAME, list(x.shape), "integratedgradients with baseline_input=1"
        )
    return b.const(method.get("baseline"))


def _path_points(b: Builder, x: ir.Value, x0: ir.Value, method: Method) -> ir.Value:
    """x₀ + αₖ(x − x₀), αₖ = k/K for k = 1..K, stacked to [K·batch, …]."""
    steps = method.get("steps")
    alphas = b.const((np.arange(1, steps + 1) / steps).reshape([steps] + [1] * len(x.shape)))
    diff = b.op("Unsqueeze", b.op("Sub", x, x0), _int64(b, [0]))
    return _stack(b, b.op("Add", b.op("Mul", alphas, diff), x0), x)


def _noisy_points(b: Builder, graph, x: ir.Value, inputs, method: Method) -> ir.Value:
    """x + εₖ for k = 1..K, stacked to [K·batch, …]; εₖ drawn here or fed as an input."""
    samples, rank = method.get("samples"), len(x.shape)
    lifted = b.op("Unsqueeze", x, _int64(b, [0]))
    if method.get("noise_input"):
        noise = _graph_input(graph, x, inputs, NOISE_INPUT_NAME, [samples, *x.shape], "smoothgrad with noise_input=1")
    else:
        repeated = b.op("Expand", lifted, _int64(b, [samples] + [1] * rank))
        normal = b.op(
            "RandomNormalLike", repeated, mean=0.0, scale=1.0, seed=float(method.get("seed") + inputs.index(x))
        )
        flat = b.op("Reshape", x, _int64(b, [0, -1]))
        high, _ = b.op_multi("TopK", flat, _int64(b, [1]), axis=1, largest=1, num_outputs=2)
        low, _ = b.op_multi("TopK", flat, _int64(b, [1]), axis=1, largest=0, num_outputs=2)
        spread = b.op("Reshape", b.op("Sub", high, low), _int64(b, [-1] + [1] * (rank - 1)))  # [batch, 1, …]
        sigma = b.scale(spread, method.get("noise"))
        last_zero = np.ones([samples] + [1] * rank)
        last_zero[-1] = 0.0
        noise = b.op("Mul", b.op("Mul", normal, sigma), b.const(last_zero))
    return _stack(b, b.op("Add", lifted, noise), x)


def _clone_forward(graph: ir.Graph, nodes: list[ir.Node], start: ir.Value, points: dict, b: Builder):
    """Copy the nodes between the inputs and `start` onto the stacked inputs: (original value → copy, copies)."""
    inputs = list(points)
    explained = depends_on(nodes, inputs)
    other_inputs = depends_on(nodes, [v for v in graph.inputs if v not in points])
    mapping, copies = dict(points), []
    needed = upstream(start)
    for node in nodes:
        if node not in needed or not any(v in explained for v in node.inputs if v is not None):
            continue
        for v in node.inputs:
            if v is not None and v not in explained and v in other_inputs:
                raise LrpcError(
                    f"node {node_label(node)} mixes the explained inputs with '{v.name}', which "
                    "depends on another graph input; integratedgradients and smoothgrad batch only the "
                    "float inputs"
                )
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            raise LrpcError(f"node {node_label(node)} has a subgraph (control flow); it has no gradient rule")
        _check_batch_free(node)
        attrs = [ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()]
        copy = ir.Node(
            node.domain,
            node.op_type,
            [mapping.get(v, v) for v in node.inputs],
            attributes=attrs,
            overload=node.overload,
            num_outputs=len(node.outputs),
            version=node.version,
            name=_CLONE_SCOPE + (node.name or f"#{len(copies)}_{node.op_type}"),
        )
        for old, new in zip(node.outputs, copy.outputs):
            new.name = f"{_CLONE_SCOPE}{old.name}" if old.name else None
            new.type, new.shape = old.type, _batched_shape(old)
            mapping[old] = new
        graph.append(copy)
        copies.append(copy)
    return mapping, copies


def _batched_shape(value: ir.Value):
    """The copy's shape. Its leading dim holds K times the rows: a static one becomes symbolic, and every
    symbolic dim is renamed (`s` → `lrpc_points_s`) so that no copy shares a dim name with an original
    (onnxruntime takes equal names for equal sizes)."""
    if value.shape is None:
        return None
    leading = value.dtype is not None and value.dtype.is_floating_point()
    dims = []
    for i, d in enumerate(value.shape):
        if isinstance(d, int):
            dims.append(f"{_DIM_PREFIX}_{d}" if i == 0 and leading else d)
        else:
            dims.append(f"{_DIM_PREFIX}_{d.value}" if d.value is not None else None)
    return ir.Shape(dims)


def _check_batch_free(node: ir.Node) -> None:
    """A Reshape to a constant shape with a fixed first dim would undo the K·batch stacking."""
    if node.op_type != "Reshape" or node.inputs[1].const_value is None:
        return
    target = node.inputs[1].const_value.numpy().reshape(-1)
    if target.size and target[0] > 0:
        raise LrpcError(
            f"node {node_label(node)} reshapes to a fixed batch of {int(target[0])}; integratedgradients "
            "and smoothgrad run the model on steps × batch rows: export the model with a dynamic batch "
            "(e.g. x.view(x.size(0), -1) or Flatten)"
        )
