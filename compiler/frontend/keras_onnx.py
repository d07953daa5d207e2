"""ONNX-side tidying of what tf2onnx writes for a Keras model: names, Conv1D bias placement.

- `tidy_names`: Keras layer names back, signature wrappers dropped, tf2onnx's counters renumbered in
  graph order (see frontend/keras.py).
- `squeeze_after_channel_constants`: Conv1D's bias and BatchNorm constants moved next to their Conv.
- `drop_noop_reshapes` (on tf2onnx's graph, before it is written): tf2onnx turns a Transpose that only moves
  size-1 axes into a Reshape, and moving the layout transposes through a keepdims mean leaves such a
  Reshape between LayerNorm's mean and its centring, `x − Reshape(mean(x), [-1, 1, H, W])`, whose target
  is the shape the mean already has. Gone, the centring reads the mean directly, as lrpc recognises it.
- `norm_means_as_reduce_mean` (on tf2onnx's graph): tf2onnx writes a keepdims mean over every axis after
  the second as GlobalAveragePool — for a LayerNormalization of tokens [batch, seq, d] that is its mean
  μ = mean_d(x) and variance mean_d((x − μ)²). Those two become ReduceMean(axes = 2…rank−1, keepdims) again
  (the same numbers), the form lrpc's LayerNorm recognition reads; a GlobalAveragePool that is a pooling
  (no centring x − μ reads it) stays.
"""

from __future__ import annotations

import re

import numpy as np
import onnx

COUNTER = re.compile(r"__(\d+)")
WRAPPER = re.compile(r"(Stateful)?PartitionedCall(_\d+)?")


def drop_noop_reshapes(g) -> int:
    """Remove each Reshape whose constant target is its input's own shape ([-1 or 0, d1, d2, …] with every
    d static); returns how many."""
    graph_outputs, dropped = set(g.outputs), 0
    for node in list(g.get_nodes()):
        if node.type != "Reshape" or node.output[0] in graph_outputs or not node.inputs[1].is_const():
            continue
        shape, target = g.get_shape(node.input[0]), node.inputs[1].get_tensor_value(as_list=True)
        if not shape or any(d is None or d < 0 for d in shape[1:]) or len(target) != len(shape):
            continue
        if target[0] in (-1, 0, shape[0]) and list(target[1:]) == list(shape[1:]) and (shape[0] > 0 or target[0] <= 0):
            g.replace_all_inputs(node.output[0], node.input[0])
            g.remove_node(node.name)
            dropped += 1
    return dropped


def norm_means_as_reduce_mean(g) -> int:
    """GlobalAveragePool m = GAP(x) read by a centring Sub(x, m), and GAP((x − m)²) of that centring (written
    Mul(c, c) or Pow(c, 2)), → ReduceMean over axes 2…rank−1 with keepdims (module docstring); returns how
    many."""
    gaps = [n for n in g.get_nodes() if n.type == "GlobalAveragePool"]
    means = {}
    for node in gaps:
        centring = [
            c
            for c in g.find_output_consumers(node.output[0])
            if c.type == "Sub" and list(c.input) == [node.input[0], node.output[0]]
        ]
        if centring:
            means[node.name] = (node, centring)
    centred = {c.output[0] for _, cs in means.values() for c in cs}
    changed = 0
    for node in gaps:
        square = g.get_node_by_output(node.input[0])
        is_variance = square is not None and (
            (square.type == "Mul" and square.input[0] == square.input[1] and square.input[0] in centred)
            or (square.type == "Pow" and square.input[0] in centred)
        )
        rank = len(g.get_shape(node.input[0]) or [])
        if (node.name in means or is_variance) and rank >= 3:
            node.type = "ReduceMean"
            node.set_attr("axes", list(range(2, rank)))
            node.set_attr("keepdims", 1)
            changed += 1
    return changed


def squeeze_after_channel_constants(proto: onnx.ModelProto) -> None:
    """`Squeeze(x) ∘ (Add|Mul|Sub|Div by c)` → `(… by c') ∘ Squeeze`, c' = c with the squeezed axes put back.

    tf2onnx writes Conv1D as Unsqueeze → Conv (2-D) → Squeeze, and the layer's bias and a following
    BatchNormalization as constant Add/Mul after the Squeeze, where canonization sees no Conv to fold
    them into (a bias left outside its layer stays with its unit under every rule, unlike z = Wx + b).
    Moving the Squeeze below them puts the constants right after the Conv; op(squeeze(x), c) equals
    squeeze(op(x, c')) because c' has size 1 on the squeezed axes."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    moved = True
    while moved:
        moved = False
        consumers = {}
        for node in graph.node:
            for v in node.input:
                consumers.setdefault(v, []).append(node)
        for i, squeeze in enumerate(graph.node):
            if squeeze.op_type != "Squeeze" or len(consumers.get(squeeze.output[0], [])) != 1:
                continue
            op = consumers[squeeze.output[0]][0]
            axes = _squeezed_axes(squeeze, inits)
            const = op.input[1] if len(op.input) == 2 and op.input[0] == squeeze.output[0] else None
            if (
                op.op_type not in ("Add", "Mul", "Sub", "Div")
                or axes is None
                or const not in inits
                or squeeze.output[0] in {o.name for o in graph.output}
            ):
                continue
            c = onnx.numpy_helper.to_array(inits[const])
            rank = _rank_of(squeeze.input[0], graph, inits)
            if rank is None or c.ndim > rank - len(axes):
                continue
            axes = sorted(a % rank for a in axes)
            c = np.expand_dims(c.reshape((1,) * (rank - len(axes) - c.ndim) + c.shape), axes)
            name = f"{const}/unsqueezed"
            graph.initializer.append(onnx.numpy_helper.from_array(c, name))
            inits[name] = graph.initializer[-1]
            inner, outer = squeeze.output[0], op.output[0]
            op.input[:] = [squeeze.input[0], name]
            op.output[:] = [inner]
            squeeze.input[0], squeeze.output[0] = inner, outer
            j = list(graph.node).index(op)
            first, second = onnx.NodeProto(), onnx.NodeProto()
            first.CopyFrom(op)
            second.CopyFrom(squeeze)
            graph.node[i].CopyFrom(first)  # the constant op takes the Squeeze's place, the Squeeze its
            graph.node[j].CopyFrom(second)
            moved = True
            break


def _squeezed_axes(squeeze, inits) -> list[int] | None:
    if len(squeeze.input) > 1 and squeeze.input[1] in inits:
        return sorted(int(a) for a in onnx.numpy_helper.to_array(inits[squeeze.input[1]]))
    attr = next((a for a in squeeze.attribute if a.name == "axes"), None)
    return sorted(attr.ints) if attr is not None and len(squeeze.input) == 1 else None


def _rank_of(name: str, graph, inits) -> int | None:
    """The rank of a Conv's output (its weight's rank), also through constant Add/Mul/Sub/Div after it;
    None for anything else."""
    producer = next((n for n in graph.node if name in n.output), None)
    while producer is not None and producer.op_type in ("Add", "Mul", "Sub", "Div") and producer.input[1] in inits:
        producer = next((n for n in graph.node if producer.input[0] in n.output), None)
    if producer is None or producer.op_type not in ("Conv", "ConvTranspose") or producer.input[1] not in inits:
        return None
    return len(inits[producer.input[1]].dims)


def tidy_names(proto: onnx.ModelProto, scope) -> onnx.ModelProto:
    """Rename nodes and values (graph inputs and outputs kept): a name's scope parts by `scope` (a list of
    parts → the new parts), leading
    signature wrappers dropped, tf2onnx's `__N` counters renumbered in graph order. Initializers are
    named after their first use (`conv_a/BiasAdd/in1`: that node's input 1) and stored in that order:
    tf2onnx merges equal constants under whichever name a set yields first. A new name that is taken
    already keeps the old one."""
    graph = proto.graph
    counters: dict[str, str] = {}

    def renamed(name: str) -> str:
        parts = name.split("/")
        while len(parts) > 1 and WRAPPER.fullmatch(parts[0]):
            parts = parts[1:]
        name = "/".join(scope(parts[:-1]) + parts[-1:])
        return COUNTER.sub(lambda m: "__" + counters.setdefault(m[1], str(len(counters))), name)

    fixed = {v.name for v in (*graph.input, *graph.output)}
    nodes = _renaming([node.name for node in graph.node], renamed, set())
    constants = {t.name for t in graph.initializer}
    uses = {}
    for node in graph.node:
        for slot, v in enumerate(node.input):
            if v in constants:
                uses.setdefault(v, f"{nodes.get(node.name, node.name)}/in{slot}")
    values = _renaming([n for node in graph.node for n in node.output], renamed, fixed | set(uses.values()))
    values.update({old: new for old, new in uses.items() if old not in fixed})
    order = {name: k for k, name in enumerate(uses)}
    graph.initializer.sort(key=lambda t: order.get(t.name, len(order)))  # in place: no copy of the weights
    del graph.initializer[len(order) :]  # constants no node reads (e.g. replaced by _squeeze_after_…)
    for node in graph.node:
        node.name = nodes.get(node.name, node.name)
        node.input[:] = [values.get(n, n) for n in node.input]
        node.output[:] = [values.get(n, n) for n in node.output]
    for item in (*graph.initializer, *graph.value_info):
        item.name = values.get(item.name, item.name)
    for info in (*graph.input, *graph.output, *graph.value_info):  # symbolic dims: unk__99 → unk__0
        for axis, dim in enumerate(info.type.tensor_type.shape.dim):
            if dim.HasField("dim_param"):
                dim.dim_param = "batch" if axis == 0 else renamed(dim.dim_param)
    return proto


def _renaming(names: list[str], renamed, fixed: set[str]) -> dict[str, str]:
    """{old: new} for the distinct non-empty `names` in order, never onto a taken or `fixed` name."""
    taken, mapping = set(fixed), {}
    for name in dict.fromkeys(n for n in names if n and n not in fixed):
        new = renamed(name)
        mapping[name] = new if new not in taken else name
        taken.add(mapping[name])
    return mapping
