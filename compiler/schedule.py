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
"""

from __future__ import annotations

import onnx


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
