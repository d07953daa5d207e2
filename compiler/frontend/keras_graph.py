"""TensorFlow GraphDef rewrites between tracing a Keras model and tf2onnx, for ops tf2onnx cannot convert.

- **Function calls** (`PartitionedCall`, `StatefulPartitionedCall`) left in the graph are inlined. Keras 3
  runs a grouped Conv2D (`groups > 1`: ConvNeXt's 7×7 depthwise conv, ResNeXt's grouped 3×3) inside
  `tf.function(jit_compile=True)`, whose `_noinline` attribute keeps grappler from inlining it, and tf2onnx
  has no converter for a call. Inlined, the body is one Conv2D whose kernel has `C / groups` input
  channels, which tf2onnx writes as an ONNX Conv with `group = C / (kernel input channels)`. The body's
  nodes are named in the call's scope: `block_dwconv_1/PartitionedCall` → `block_dwconv_1/convolution`
  (the Keras layer name survives; the call's own name when that is taken).
- **Erfc** (TensorFlow's exact gelu is ½x·erfc(−x/√2)) becomes `1 − Erf(u)`: erfc(u) = 1 − erf(u) exactly,
  and lrpc recognises ½x·(1 − erf(−x/√2)) as GELU like the usual ½x·(1 + erf(x/√2)).
- **Keras' LayerNormalization** computes y = x·s + (β − μ·s), s = γ·rsqrt(var + ε), μ = mean(x), var =
  mean((x − μ)²) (`keras.ops.layer_normalization`): x enters twice, once bare and once through μ, and the
  centring is nowhere. It becomes y = (x − μ)·s + β, the form lrpc's LayerNorm rule reads (centring, the
  denominator held fixed, β a bias), and the variance squares that same x − μ (the same numbers as
  before). y changes by float rounding only (≤ a few ulp: (x − μ)·s instead of x·s − μ·s).

Each rewrite keeps the GraphDef's node order (new nodes take the place of the node they replace), so the
same traced graph always gives the same ONNX graph.
"""

from __future__ import annotations

import re

CALLS = ("PartitionedCall", "StatefulPartitionedCall")
TF2ONNX_OWN = {"Const", "Placeholder", "PlaceholderWithDefault"}  # tf2onnx's initializers and graph inputs
MAX_DEPTH = 8  # calls inside calls: Keras nests at most one level today
_CALL_SUFFIX = re.compile(r"/(Stateful)?PartitionedCall(_\d+)?$")


def rewrite_for_tf2onnx(tf, graph_def) -> None:
    """Inline function calls, then replace Erfc; `graph_def` is changed in place."""
    inline_calls(tf, graph_def)
    replace_erfc(tf, graph_def)
    center_layer_norms(graph_def)


def inline_calls(tf, graph_def) -> None:
    """Replace each call of a library function by the function's body, repeatedly (nested calls)."""
    from tensorflow.python.framework.function_def_to_graph import function_def_to_graph_def

    for _ in range(MAX_DEPTH):
        calls = [n for n in graph_def.node if n.op in CALLS]
        if not calls:
            break
        library = {f.signature.name: f for f in graph_def.library.function}
        registry = tf.compat.v1.GraphDef()
        registry.library.CopyFrom(graph_def.library)
        with tf.Graph().as_default():
            tf.import_graph_def(registry, name="")  # registers the functions a body may call
            taken = {n.name for n in graph_def.node}
            inlined = {
                call.name: _inline(call, library[call.attr["f"].func.name], function_def_to_graph_def, taken)
                for call in calls
                if call.attr["f"].func.name in library
            }
        if not inlined:
            break
        _replace_nodes(graph_def, {name: nodes for name, (nodes, _) in inlined.items()})
        for name, (_, results) in inlined.items():
            _rewire(graph_def, name, results)
    _prune_library(graph_def)


def _prune_library(graph_def) -> None:
    """Drop the library functions nothing calls any more: tf2onnx would convert each one on its own, with
    inputs of unknown shape (a frozen SavedModel's grouped-conv body then fails on its kernel's shape)."""
    library = {f.signature.name: f for f in graph_def.library.function}

    def called(nodes) -> set[str]:
        names = set()
        for node in nodes:
            names.add(node.op)
            for value in node.attr.values():
                if value.HasField("func"):
                    names.add(value.func.name)
                names.update(f.name for f in value.list.func)
        return names & set(library)

    keep, todo = set(), called(graph_def.node)
    while todo:
        name = todo.pop()
        keep.add(name)
        todo |= called(library[name].node_def) - keep
    if len(keep) < len(library):
        functions = [f for f in graph_def.library.function if f.signature.name in keep]
        copies = [type(f)() for f in functions]
        for copy, f in zip(copies, functions):
            copy.CopyFrom(f)
        del graph_def.library.function[:]
        graph_def.library.function.extend(copies)


def _inline(call, fdef, to_graph_def, taken: set[str]):
    """(the body's nodes in the call's scope, the tensors that stand for the call's outputs)."""
    body, nested_names = to_graph_def(fdef)
    args = [a.name for a in fdef.signature.input_arg]
    data_inputs = [i for i in call.input if not i.startswith("^")]
    controls = [i for i in call.input if i.startswith("^")]
    arg_values = {f"{a}:0": data_inputs[k] for k, a in enumerate(args)}
    prefix = _scope(call.name, {n.name for n in body.node if n.name not in args}, taken)

    def outer(tensor: str) -> str:
        if tensor.startswith("^"):
            return f"^{prefix}/{tensor[1:]}"
        name, _, index = tensor.partition(":")
        return arg_values.get(f"{name}:{index or 0}") or _tensor(f"{prefix}/{name}", index or "0")

    nodes = []
    for node in body.node:
        if node.op == "Placeholder" and node.name in args:
            continue
        node.name = f"{prefix}/{node.name}"
        node.device = ""
        inputs = [outer(i) for i in node.input if not (i.startswith("^") and i[1:] in args)]
        node.ClearField("input")
        node.input.extend(inputs + (controls if not any(i.startswith("^") for i in inputs) else []))
        nodes.append(node)
    taken.update(n.name for n in nodes)
    return nodes, [outer(nested_names[fdef.ret[a.name]]) for a in fdef.signature.output_arg]


def _scope(call_name: str, body_names: set[str], taken: set[str]) -> str:
    """The call's scope without the `/PartitionedCall` wrapper, unless a body node's name is taken there."""
    scope = _CALL_SUFFIX.sub("", call_name)
    if scope != call_name and scope and not any(f"{scope}/{n}" in taken for n in body_names):
        return scope
    return call_name


def _tensor(node: str, index: str) -> str:
    return node if index == "0" else f"{node}:{index}"


def _replace_nodes(graph_def, replacements: dict) -> None:
    """Put the nodes `replacements[name]` where node `name` is, keeping every other node's position."""
    kept = []
    for node in graph_def.node:
        kept.extend(replacements.get(node.name, [node]))
    copies = []
    for node in kept:
        copies.append(type(node)())
        copies[-1].CopyFrom(node)
    del graph_def.node[:]
    graph_def.node.extend(copies)


def _rewire(graph_def, old: str, results: list[str]) -> None:
    """Inputs that read node `old` (`old`, `old:k`, `^old`) read `results[k]` instead."""
    for node in graph_def.node:
        for k, tensor in enumerate(node.input):
            if tensor == f"^{old}":
                node.input[k] = "^" + results[0].lstrip("^").split(":")[0] if results else tensor
                continue
            name, _, index = tensor.partition(":")
            if name == old:
                node.input[k] = results[int(index or 0)]


def replace_erfc(tf, graph_def) -> None:
    """Erfc(u) → Sub(1, Erf(u)) under the Erfc node's name (its consumers are unchanged)."""
    replacements = {}
    for node in [n for n in graph_def.node if n.op == "Erfc"]:
        dtype = node.attr["T"].type
        one = type(node)(name=f"{node.name}/one", op="Const")
        one.attr["dtype"].type = dtype
        one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(1.0, dtype=tf.as_dtype(dtype)))
        erf = type(node)(name=f"{node.name}/Erf", op="Erf", input=list(node.input))
        erf.attr["T"].type = dtype
        sub = type(node)(name=node.name, op="Sub", input=[one.name, erf.name])
        sub.attr["T"].type = dtype
        replacements[node.name] = [one, erf, sub]
    if replacements:
        _replace_nodes(graph_def, replacements)


def center_layer_norms(graph_def) -> int:
    """Rewrite each Keras layer_normalization (module docstring) in place; returns how many."""
    nodes = {n.name: n for n in graph_def.node}
    readers: dict[str, int] = {}
    for node in graph_def.node:
        for tensor in node.input:
            readers[tensor.lstrip("^").split(":")[0]] = readers.get(tensor.lstrip("^").split(":")[0], 0) + 1

    def node_of(tensor: str):
        name, _, index = tensor.partition(":")
        return nodes.get(name) if index in ("", "0") and not tensor.startswith("^") else None

    count, new_nodes = 0, {}
    for out in list(graph_def.node):
        match = _layer_norm(out, node_of) if out.op in ("AddV2", "Add") and len(out.input) == 2 else None
        if match is None or readers.get(match["scaled"].name) != 1 or readers.get(match["shift"].name) != 1:
            continue
        scaled, mean, square = match["scaled"], match["mean"], match["square"]
        scope = mean.name.split("/moments/")[0]
        centered = type(out)(name=_free(f"{scope}/centered", nodes), op="Sub", input=[mean.input[0], mean.name])
        centered.attr["T"].CopyFrom(out.attr["T"])
        nodes[centered.name] = centered
        new_nodes[scaled.name] = [centered, scaled]
        scaled.ClearField("input")
        scaled.input.extend([centered.name, match["inv"]])
        square.op = "Square"  # (x − sg(μ))² = (x − μ)²: the same values, now read from the centring
        square.ClearField("input")
        square.input.append(centered.name)
        out.ClearField("input")
        if match["beta"] is None:
            out.op = "Identity"
            out.input.append(scaled.name)
        else:
            out.input.extend([scaled.name, match["beta"]])
        count += 1
    if new_nodes:
        _replace_nodes(graph_def, new_nodes)
    return count


def _layer_norm(out, node_of) -> dict | None:
    """The parts of y = x·inv + (β − μ·inv) ending at `out` (Keras' layer_normalization), else None."""
    for i in (0, 1):
        scaled, rest = node_of(out.input[i]), node_of(out.input[1 - i])
        if scaled is None or rest is None or scaled.op != "Mul":
            continue
        shift, beta = rest, None
        if rest.op in ("AddV2", "Add"):
            parts = [node_of(t) for t in rest.input]
            k = next((k for k, p in enumerate(parts) if p is not None and p.op == "Mul"), None)
            if k is None:
                continue
            shift, beta = parts[k], rest.input[1 - k]
        if shift.op != "Mul":
            continue
        negs = [(k, node_of(t)) for k, t in enumerate(shift.input)]
        found = next(((k, n) for k, n in negs if n is not None and n.op == "Neg"), None)
        if found is None:
            continue
        inv, mean = shift.input[1 - found[0]], node_of(found[1].input[0])
        if mean is None or mean.op != "Mean" or not mean.attr["keep_dims"].b:
            continue
        if sorted(scaled.input) != sorted([mean.input[0], inv]) or mean.input[0] == inv:
            continue
        square = _variance_square(inv, mean, node_of)
        if square is not None:
            return {"scaled": scaled, "shift": shift, "beta": beta, "inv": inv, "mean": mean, "square": square}
    return None


def _variance_square(inv: str, mean, node_of):
    """The SquaredDifference(x, μ) under inv = [γ·] rsqrt(mean((x − μ)²) + ε), else None."""
    node = node_of(inv)
    if node is not None and node.op == "Mul":
        node = next((n for n in map(node_of, node.input) if n is not None and n.op == "Rsqrt"), None)
    if node is None or node.op != "Rsqrt" or (add := node_of(node.input[0])) is None or add.op not in ("AddV2", "Add"):
        return None
    variance = next((n for n in map(node_of, add.input) if n is not None and n.op == "Mean"), None)
    square = node_of(variance.input[0]) if variance is not None else None
    if square is None or square.op != "SquaredDifference" or square.input[0] != mean.input[0]:
        return None
    centre = node_of(square.input[1])
    while centre is not None and centre.op in ("StopGradient", "Identity"):
        centre = node_of(centre.input[0])
    return square if centre is mean or (centre is not None and centre.name == mean.name) else None


def _free(name: str, taken) -> str:
    new, k = name, 0
    while new in taken:
        k += 1
        new = f"{name}_{k}"
    return new


def unconverted(onnx_nodes) -> list[tuple[str, str]]:
    """(node name, TensorFlow op) of each node tf2onnx left as a TensorFlow op: not an ONNX op of its domain
    (tf2onnx's graph keeps constants and graph inputs as `Const` and `Placeholder` nodes: those are fine)."""
    import onnx

    found = []
    for node in onnx_nodes:
        domain = node.domain or ""
        if node.type in TF2ONNX_OWN and not domain:
            continue
        if domain not in ("", "ai.onnx", "ai.onnx.ml") or not onnx.defs.has(node.type, domain):
            found.append((node.name, node.type))
    return found


def unconverted_message(found: list[tuple[str, str]], layer_of) -> str:
    """One line: the first op tf2onnx could not convert, its Keras layer and node, and the others by count."""
    name, op = found[0]
    counts: dict[str, int] = {}
    for _, other in found:
        counts[other] = counts.get(other, 0) + 1
    others = ", ".join(f"{o} ×{n}" for o, n in counts.items() if o != op)
    return (
        f"tf2onnx cannot convert the TensorFlow op {op} (Keras layer '{layer_of(name)}', node {name}; "
        f"{counts[op]} such node{'s' if counts[op] > 1 else ''}{'; also ' + others if others else ''}); "
        "lrpc has no rewrite for it: replace that layer with supported ones, or report the op"
    )
