"""A canonization pass: a rewrite tried on every node, each rewrite keeping the forward output.

`rewrite(node, graph)` changes the graph in place around `node` and returns a one-line description
of what it did (shown by `lrpc compile --verbose`), or None when the node is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


class Canonization(ir.passes.InPlacePass):
    def __init__(self):
        super().__init__()
        self.changes: list[str] = []

    def rewrite(self, node: ir.Node, graph: ir.Graph) -> str | None:
        raise NotImplementedError

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.changes = []
        for node in list(model.graph):
            if node.graph is not None:  # not removed by an earlier rewrite of this pass
                change = self.rewrite(node, model.graph)
                if change:
                    self.changes.append(change)
        return ir.passes.PassResult(model, bool(self.changes))


def const_array(value: ir.Value | None) -> np.ndarray | None:
    return None if value is None or value.const_value is None else value.const_value.numpy()


def sole_use(value: ir.Value) -> ir.Node | None:
    """The one node reading `value`, when exactly one does and it is not a graph output."""
    uses = value.uses()
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def fresh_name(graph: ir.Graph, base: str, *replaced: ir.Node) -> str:
    """`base`, else `base_1`, `base_2`, …: the first that no node of `graph` (besides those being `replaced`)
    has. onnxruntime refuses a file with two nodes of one name, and a rewrite that names its nodes after an
    unnamed source (`AveragePool`) would otherwise repeat that name for every such node."""
    taken = {n.name for n in graph if n not in replaced}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def replace_node(graph: ir.Graph, old: ir.Node, nodes: list[ir.Node], result: ir.Value) -> None:
    """Put `nodes` where `old` was; `result` takes over the uses, name and type of old's output."""
    graph.insert_before(old, nodes)
    out = old.outputs[0]
    result.shape, result.type = out.shape, out.type
    out.replace_all_uses_with(result, replace_graph_outputs=True)
    graph.remove(old, safe=True)
    result.name = out.name


def bypass(graph: ir.Graph, node: ir.Node, source: ir.Value, rename: bool) -> None:
    """Remove `node`, its readers reading `source` instead; `rename`: source takes the output's name."""
    out = node.outputs[0]
    name = out.name
    out.replace_all_uses_with(source, replace_graph_outputs=rename)
    graph.remove(node, safe=True)
    if rename:
        source.name = name
