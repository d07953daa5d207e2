"""The memory floor of an explained graph: what every schedule of its one pass must hold, from the graph.

    floor(batch) = W + K + T

W   the constants onnxruntime holds after folding at load: a node all of whose inputs are constants
    (initializers or outputs of such nodes; random ops excepted) is folded, and every constant that an
    unfolded node reads, or that the graph returns, counts once: an initializer only while an unfolded
    node still reads it; a folded W⁺ = Relu(W) or flipped kernel as a constant of its own.
K   the activations held when the forward pass ends: the graph inputs (the caller holds them for the
    whole run) plus the smallest set of tensors that, held at that moment, lets the backward pass run.
    The forward part is the nodes the model's own outputs need; the backward part is the other nodes
    that depend on the explained tensor (lrpc.explained; without it, the forward outputs) — they run
    after the forward pass; any other node (x⁺ = Relu(x), a stabilised z, pooling winners, a Shape)
    may run on either side, whichever holds less: K is the minimum cut between the forward and the
    backward nodes (max-flow), a tensor costing its bytes when its producer runs before the end and a
    reader, or the graph's return, after.
T   the most the backward pass needs above K at one node, net of the kept tensors it may have freed:

        T = max(0, max over backward nodes n of live(n) − K)
        live(n) = bytes of (n's inputs and outputs, constants excepted) ∪ the graph inputs ∪ the
                  forward outputs ∪ the tensors of K that n or a backward node after it reads

    so W + K + T = W + max(K, max live(n)), and each of those is held at one moment of every schedule.

Sizes: lrpc.tensor_sizes (shapes inferred with the inputs' dynamic dims fixed as `lrpc bench` feeds
them: axis 0 the batch, any other 1; computed shape values evaluated where onnx leaves them). A view
(Reshape, Flatten, Squeeze, Unsqueeze, Identity: onnxruntime hands back its input's buffer) is its
input's buffer, counted once. A tensor whose shape stays unknown counts 0 bytes and is listed in
`unknown` ("floor: N tensors of unknown size left out"). Not modelled: an elementwise output written
into a dying input's buffer, and the runtime's own memory (arena, pre-packed weights, the library).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import NamedTuple

import onnx

from lrpc_runtime.metadata import KEY_EXPLAINED, KEY_RELEVANCE, KEY_RELEVANCE_OUTPUTS

from .ops import RANDOM_OPS, VIEW_OPS
from .tensor_sizes import tensor_sizes
from .text import PER_FEATURE_SUFFIX

MB = 2**20


@dataclass
class Floor:
    """The floor's parts in bytes, with the tensors K holds and the node where T peaks."""

    batch: int
    weights: int
    kept: int
    transient: int
    kept_tensors: list = field(default_factory=list)
    transient_node: str | None = None
    unknown: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.weights + self.kept + self.transient

    def summary(self, peak_mb: float | None = None) -> dict:
        """The JSON entry of `lrpc bench` (MB)."""
        return {
            "batch": self.batch,
            "weights_mb": self.weights / MB,
            "kept_mb": self.kept / MB,
            "transient_mb": self.transient / MB,
            "floor_mb": self.total / MB,
            "transient_node": self.transient_node,
            "unknown_size_tensors": len(self.unknown),
            "explained_peak_over_floor": None if peak_mb is None or not self.total else peak_mb * MB / self.total,
        }


class Node(NamedTuple):
    """A node as the floor reads it: empty input and output names dropped."""

    name: str
    op_type: str
    inputs: tuple
    outputs: tuple


def nodes_of(graph: onnx.GraphProto) -> list[Node]:
    """The graph's nodes in file (topological) order, named by their name or else their first output."""
    return [
        Node(n.name or n.output[0], n.op_type, tuple(i for i in n.input if i), tuple(o for o in n.output if o))
        for n in graph.node
    ]


def folded(nodes: list[Node], constants: set[str]) -> tuple[set[int], set[str]]:
    """(indices of the nodes folded at load, `constants` with the folded outputs added)."""
    constants, skip = set(constants), set()
    for k, node in enumerate(nodes):
        if node.op_type in RANDOM_OPS or (not node.inputs and node.op_type != "Constant"):
            continue
        if all(name in constants for name in node.inputs):
            skip.add(k)
            constants.update(node.outputs)
    return skip, constants


def held_constants(nodes: list[Node], skip: set[int], constants: set[str], outputs: list[str]) -> set[str]:
    """The constants a node left to run reads, or the graph returns."""
    read = {name for k, node in enumerate(nodes) if k not in skip for name in node.inputs}
    return (read | set(outputs)) & constants


def alias_views(nodes: list[Node], skip: set[int]) -> tuple[list[Node], dict[str, str]]:
    """Each view (Reshape, Flatten, Squeeze, Unsqueeze, Identity: onnxruntime returns its input's buffer)
    reads and writes one buffer, named by the tensor it views: (the nodes so renamed, view → buffer)."""
    root, renamed = {}, []
    for k, node in enumerate(nodes):
        inputs = tuple(root.get(name, name) for name in node.inputs)
        if k not in skip and node.op_type in VIEW_OPS and inputs:
            root[node.outputs[0]] = inputs[0]
            node = node._replace(outputs=node.outputs[1:])
        renamed.append(node._replace(inputs=inputs))
    return renamed, root


def forward_outputs(model: onnx.ModelProto) -> list[str]:
    """The graph outputs that are not relevance (lrpc.relevance, lrpc.relevance_outputs, their per-feature maps)."""
    meta = {p.key: p.value for p in model.metadata_props}
    relevance = set(json.loads(meta.get(KEY_RELEVANCE, "{}")).values())
    relevance |= set(json.loads(meta.get(KEY_RELEVANCE_OUTPUTS, "{}")))
    relevance |= {name + PER_FEATURE_SUFFIX for name in relevance}
    return [o.name for o in model.graph.output if o.name not in relevance]


def parts(nodes: list[Node], skip: set[int], outputs: list[str], seeds: list[str]) -> tuple[set, set]:
    """(forward nodes: what `outputs` need; backward nodes: the others that depend on `seeds`), as indices;
    nodes in `skip` (folded) are in neither."""
    producer = {name: k for k, node in enumerate(nodes) for name in node.outputs}
    forward, todo = set(), [producer[name] for name in outputs if name in producer]
    while todo:
        k = todo.pop()
        if k not in forward and k not in skip:
            forward.add(k)
            todo += [producer[name] for name in nodes[k].inputs if name in producer]
    late_values, backward = set(seeds), set()
    for k, node in enumerate(nodes):
        if k not in forward and k not in skip and late_values.intersection(node.inputs):
            backward.add(k)
            late_values.update(node.outputs)
    return forward, backward


def _max_flow_source_side(arcs: dict, source, sink) -> set:
    """Edmonds–Karp on capacities arcs[u][v]; the nodes the source still reaches at the maximum flow."""
    while True:
        parent, queue = {source: None}, deque([source])
        while queue and sink not in parent:
            u = queue.popleft()
            for v, capacity in arcs[u].items():
                if capacity > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            return set(parent)
        path, v = [], sink
        while parent[v] is not None:
            path.append((parent[v], v))
            v = parent[v]
        push = min(arcs[u][v] for u, v in path)
        if push == math.inf:
            raise ValueError("memory floor: a forward node feeds a backward one without a tensor between")
        for u, v in path:
            arcs[u][v] -= push
            arcs[v][u] = arcs[v].get(u, 0) + push


def kept_at_forward_end(
    nodes: list[Node], skip: set[int], forward: set, backward: set, outputs: list[str], free: set[str], sizes: dict
) -> list[str]:
    """The tensors held when the forward pass ends: the minimum cut between the forward and the backward
    nodes, a tensor costing its bytes. `free` (constants, graph inputs) costs nothing and is left out."""
    arcs = defaultdict(dict)

    def link(u, v, capacity):
        arcs[u][v] = arcs[u].get(v, 0) + capacity
        arcs[v].setdefault(u, 0)

    producer = {}
    for k, node in enumerate(nodes):
        if k in skip:
            continue
        if k in forward:
            link("source", k, math.inf)
        if k in backward:
            link(k, "sink", math.inf)
        for name in node.inputs:
            if name in producer:
                link(("t", name), k, math.inf)
                link(k, producer[name], math.inf)  # a reader runs before the end only if its producer does
        for name in node.outputs:
            if name not in free:
                producer[name] = k
                link(k, ("t", name), sizes.get(name, 0))
    for name in outputs:
        if name in producer:
            link(("t", name), "sink", math.inf)  # returned at the run's end
    reached = _max_flow_source_side(arcs, "source", "sink")
    return sorted(name for name, k in producer.items() if k in reached and ("t", name) not in reached)


def largest_live(
    nodes: list[Node], backward: set, kept: list[str], always: set[str], constants: set[str], sizes: dict
) -> tuple[int, str | None]:
    """(max over backward nodes n of live(n), n's name): see the module docstring."""
    kept_set, needed, best = set(kept), {}, (0, None)
    readers = defaultdict(list)
    for k in backward:
        for name in nodes[k].inputs:
            readers[name].append(k)
    for k in sorted(backward, reverse=True):  # file order is topological: descendants first
        node = nodes[k]
        needed[k] = kept_set.intersection(node.inputs).union(
            *(needed[c] for name in node.outputs for c in readers.get(name, ()))
        )
        live = (set(node.inputs) | set(node.outputs) | needed[k] | always) - constants
        total = sum(sizes.get(name, 0) for name in live)
        if total > best[0]:
            best = (total, node.name)
    return best


def memory_floor(model: onnx.ModelProto | str, batch: int, outputs: list[str] | None = None) -> Floor:
    """The floor of an explained `model` (a path or ModelProto) at `batch`; `outputs` are the plain model's
    outputs (default: the graph outputs that are not relevance)."""
    base_dir = None
    if not isinstance(model, onnx.ModelProto):
        base_dir = os.path.dirname(os.path.abspath(model))
        model = onnx.load(str(model), load_external_data=False)
    sizes = tensor_sizes(model, batch, base_dir)
    inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    nodes = nodes_of(model.graph)
    skip, constants = folded(nodes, {t.name for t in model.graph.initializer} - inputs)
    graph_outputs = [o.name for o in model.graph.output]
    weights = held_constants(nodes, skip, constants, graph_outputs)
    nodes, root = alias_views(nodes, skip)
    outputs = [root.get(name, name) for name in (outputs if outputs is not None else forward_outputs(model))]
    meta = {p.key: p.value for p in model.metadata_props}
    seeds = [root.get(meta[KEY_EXPLAINED], meta[KEY_EXPLAINED])] if KEY_EXPLAINED in meta else outputs
    forward, backward = parts(nodes, skip, outputs, seeds)
    returned = [root.get(name, name) for name in graph_outputs]
    kept = kept_at_forward_end(nodes, skip, forward, backward, returned, constants | inputs, sizes)
    held = sum(sizes.get(name, 0) for name in [*inputs, *kept])
    live, node = largest_live(nodes, backward, kept, inputs | set(outputs), constants, sizes)
    tensors = (inputs | {name for n in nodes for name in n.outputs} | weights) - set(sizes)
    return Floor(
        batch,
        sum(sizes.get(name, 0) for name in weights),
        held,
        max(0, live - held),
        sorted(inputs) + kept,
        node,
        sorted(tensors),
    )


def _mb(value: float) -> str:
    return f"{value:.0f} MB" if value >= 100 else f"{value:.3g} MB"


def floor_line(summary: dict, peak_mb: float | None) -> str:
    """The line `lrpc bench` prints from a `Floor.summary`: the parts, and the explained peak RSS against them."""
    line = (
        f"memory floor (batch {summary['batch']}): weights {_mb(summary['weights_mb'])} + kept activations "
        f"{_mb(summary['kept_mb'])} + largest transient {_mb(summary['transient_mb'])} = "
        f"{_mb(summary['floor_mb'])}; "
    )
    if peak_mb is None:
        line += "explained peak RSS not measured"
    else:
        line += f"explained peak RSS {_mb(peak_mb)} = {peak_mb / max(summary['floor_mb'], 1e-12):.2f}× the floor"
    unknown = summary["unknown_size_tensors"]
    if unknown:
        line += f"; floor: {unknown} tensor{'s' * (unknown != 1)} of unknown size left out"
    return line
