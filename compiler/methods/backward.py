"""The backward driver: the gradient flows from the explained tensor back to the sources.

Nodes are visited in reverse order; a node whose outputs carry a gradient and whose inputs depend
on a source gets `g_in = Jᵀ g_out` from the table (table.py); where a value fans out to several
consumers the gradients add up (g_v = Σ_consumers g_v,c, the chain rule). Values that do not depend
on a source (weights, shape chains) get none.
"""

from __future__ import annotations

import onnx_ir as ir

from ..builder import Builder
from ..errors import LrpcError, node_label
from . import elementwise, layers, norms  # noqa: F401  (fill the table)
from .table import GRADIENTS, supported_gradient_ops


def depends_on(nodes: list[ir.Node], sources) -> set[ir.Value]:
    reached = set(sources)
    for node in nodes:
        if any(v in reached for v in node.inputs if v is not None):
            reached.update(node.outputs)
    return reached


def backward(nodes: list[ir.Node], start: ir.Value, seed: ir.Value, sources: list[ir.Value], b: Builder,
             relu: str = "gradient", scope: str = "grad") -> dict:
    """The gradient of Σ seed ⊙ start with respect to each source (None where none arrives);
    `nodes` in topological order, `relu` the method's ReLU mode."""
    dependent = depends_on(nodes, sources)
    grads = {start: seed}
    for node in reversed(nodes):
        g_out = [grads.pop(v, None) for v in node.outputs]
        if all(g is None for g in g_out) or not any(v in dependent for v in node.inputs if v is not None):
            continue
        rule = GRADIENTS.get(node.op_type)
        if rule is None:
            raise LrpcError(f"no gradient rule for node {node_label(node)}; supported ops: "
                            f"{', '.join(supported_gradient_ops())}")
        if any(g is None for g in g_out) and not rule.partial_outputs:
            raise LrpcError(f"node {node_label(node)}: the gradient reaches only some of its outputs; "
                            f"{node.op_type} nodes are explained only as a whole")
        b.scope = f"{scope}/{node.name or node.op_type}"
        for value, g in zip(node.inputs, rule(node, g_out, b, relu)):
            if g is None or value is None or value not in dependent:
                continue
            grads[value] = b.op("Add", grads[value], g) if value in grads else g
    return {v: grads.get(v) for v in sources}
