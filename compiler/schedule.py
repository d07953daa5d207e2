"""Node order of the emitted graph: each node as early as its inputs allow (ASAP levels).

    level(n) = 1 + max(level(producer of each input of n)),   graph inputs and initializers at level 0

nodes sorted by level, file order within a level. Any topological order computes the same values; this
one is for onnxruntime's memory. onnxruntime executes a graph in the order of a reverse depth-first walk
from its leaf nodes that, at every node, enters the input producers in decreasing order of their
position in the file (graph.cc, ReverseDFSFrom with NodeCompare), so of two operands the one produced
later in the file is computed first, with its whole subtree. The lowering emits the backward pass after
the forward, layer by layer from the top: a quotient s = R / stab(a) finds its R produced before
stab(a), and onnxruntime computes stab(a) — forward values only — during the forward pass, keeping a
full activation-sized tensor alive per layer until the backward reaches it. Placed by level, stab(a)
comes right after a, before the relevance R that reaches it, so onnxruntime computes it last, next to
the division. The measured effect (VGG-16 ε: onnxruntime's live set about halved) and the command that
reproduces it are in benchmarks/PROFILE.md §6.

No one order suits every graph: onnxruntime can also run the nodes in the file's order
(`ExecutionOrder.PRIORITY_BASED`: ready nodes by their index). `runs_best_in_file_order` compares the two
orders' live sets — the most activation bytes alive at once, at batch 2 — and the file records the
answer (`lrpc.execution_order = file`) for `lrpc_runtime.Explainer` and `lrpc bench`: ViT-Tiny AttnLRP at
batch 16 peaks at 434 MB in the file's order and 815 MB in onnxruntime's own, VGG-16 ε at 2957 and 2557
(PROFILE.md §14).
"""

from __future__ import annotations

from collections import defaultdict

import onnx

from .tensor_sizes import tensor_sizes


def order_by_level(graph: onnx.GraphProto) -> None:
    """Reorder graph.node in place: by ASAP level, ties in their current (topological) order."""
    level_of_value: dict[str, int] = {}
    keyed = []
    for position, node in enumerate(graph.node):
        level = 1 + max((level_of_value.get(name, 0) for name in node.input if name), default=0)
        for name in node.output:
            level_of_value[name] = level
        keyed.append((level, position))
    if all(a <= b for a, b in zip(keyed, keyed[1:])):
        return
    nodes = [graph.node[position] for _, position in sorted(keyed)]
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


FILE_ORDER_GAIN = 0.8  # the file's order is recorded where its live set is below this share of onnxruntime's


def onnxruntime_order(graph: onnx.GraphProto) -> list[int]:
    """The node indices in the order onnxruntime's default walk runs them: post-order of a depth-first walk
    from each leaf (in file order), entering a node's input producers latest-in-file first."""
    producer = {name: k for k, node in enumerate(graph.node) for name in node.output}
    read = {producer[name] for node in graph.node for name in node.input if name in producer}
    order, seen = [], set()
    for leaf in (k for k in range(len(graph.node)) if k not in read):
        stack = [(leaf, False)]
        while stack:
            k, entered = stack.pop()
            if entered:
                order.append(k)
            elif k not in seen:
                seen.add(k)
                stack.append((k, True))
                inputs = sorted({producer[name] for name in graph.node[k].input if name in producer})
                stack.extend((p, False) for p in inputs if p not in seen)  # the latest is popped first
    return order


def live_bytes(graph: onnx.GraphProto, order: list[int], sizes: dict) -> int:
    """The most activation bytes alive at once when the nodes run in `order` (a tensor lives from its
    producer, or the start for a graph input, to its last reader; the graph outputs to the end)."""
    constants = {t.name for t in graph.initializer}
    end = {o.name: len(order) for o in graph.output}
    for step, k in enumerate(order):
        for name in graph.node[k].input:
            end[name] = max(end.get(name, step), step)
    freed = defaultdict(list)  # step → the tensors whose last reader runs then
    alive = most = 0
    for name in (i.name for i in graph.input if i.name not in constants):
        alive += sizes.get(name, 0)
        freed[end.get(name, 0)].append(name)
    for step, k in enumerate(order):
        for name in graph.node[k].output:
            alive += sizes.get(name, 0)
            freed[end.get(name, step)].append(name)
        most = max(most, alive)
        alive -= sum(sizes.get(name, 0) for name in freed.pop(step, ()))
    return most


SIZED_AT_BATCH = 2  # activations scale with the batch, so any batch ranks the two orders


def runs_best_in_file_order(model: onnx.ModelProto) -> bool:
    """Whether the file's node order keeps markedly less alive than onnxruntime's default walk (sizes at
    batch 2, other free dims 1: lrpc.tensor_sizes)."""
    graph = model.graph
    sizes = tensor_sizes(model, SIZED_AT_BATCH)
    file_order = live_bytes(graph, list(range(len(graph.node))), sizes)
    return file_order < FILE_ORDER_GAIN * live_bytes(graph, onnxruntime_order(graph), sizes)
