"""Values no explained input reaches are constants of the call: shape chains, masks, position tables.

The explained sources are the float graph inputs and, for an integer input of token ids, its embedding
lookups Gather(table, ids) with a constant table (the relevance of a token is its embedding's). A value is
*static* when it depends on no source's values:

    static(v)  ⇔  v is computed from constants, tensor shapes (Shape, Size) and integer inputs that are
                  not looked up (attention masks, token types) alone

— the attention scale 1/√d computed from a dynamic shape, a causal or padding mask, the cos/sin tables of
rotary embeddings, position ids from a Range. For relevance such a value is a constant: it takes none,
a product with it is a scaling, a sum with it a bias (rules/combine.py, rules/gates.py). The mark lives
in value.meta; the graph does not change.
"""

from __future__ import annotations

import onnx_ir as ir

from ..text import embedding_lookups, is_int

STATIC = "lrpc.static"
SHAPE_OPS = ("Shape", "Size")  # their outputs depend on a tensor's shape, never on its values


def explained_sources(graph: ir.Graph) -> list[ir.Value]:
    """Float graph inputs, and the embedding lookups of integer inputs (compiler/text.py), in input order."""
    sources = []
    for v in graph.inputs:
        if v.dtype is not None and v.dtype.is_floating_point():
            sources.append(v)
        elif is_int(v):
            sources.extend(n.outputs[0] for n in embedding_lookups(v))
    return sources


def reached_by(nodes, sources) -> set[ir.Value]:
    """Every value that depends on the values of `sources` (nodes in topological order)."""
    reached = set(sources)
    for node in nodes:
        if node.op_type not in SHAPE_OPS and any(v in reached for v in node.inputs if v is not None):
            reached.update(node.outputs)
    return reached


class MarkStaticPass(ir.passes.InPlacePass):
    """Marks the node outputs no explained source reaches (module docstring); changes no node."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        reached = reached_by(graph, explained_sources(graph))
        for node in graph:
            for v in node.outputs:
                if v not in reached:
                    v.meta[STATIC] = True
                else:
                    v.meta.pop(STATIC, None)
        return ir.passes.PassResult(model, False)


def is_static(value: ir.Value | None) -> bool:
    return value is not None and bool(value.meta.get(STATIC))
