"""The reverse walk shared by the LRP lowering (lower.py) and the gradient methods (methods/backward.py).

Nodes are visited in reverse topological order. A node whose outputs carry a signal (relevance, or a
gradient) and whose inputs depend on a source gets its rule from `table` (None where no signal reaches
an output: only rules registered with partial_outputs accept that); where a value fans out, the
signals of its consumers add up (R_v = Σ_c R_v,c; for gradients the chain rule). Values that do not
depend on a source (weights, shape chains) receive none.

A node that cannot be explained — no rule for its op, or a rule that refuses it — does not stop the
walk: it passes each live input itself back as a stand-in signal (of the right shape, so the nodes
above it are examined too), and at the end one error lists every such node with the count, so a
model is fixed in one round. Nothing built after a refusal is used.
"""

from __future__ import annotations

import onnx_ir as ir

from .errors import LrpcError, node_label
from .passes.mark_static import reached_by


class Unexplained(LrpcError):
    """Nodes the walk could not pass a signal through: `refused` maps each to why."""

    def __init__(self, message: str, refused: dict):
        super().__init__(message)
        self.refused = refused


def depends_on(nodes, sources) -> set[ir.Value]:
    """The values computed from the sources' values (a Shape's output is not: passes/mark_static.py)."""
    return reached_by(nodes, sources)


def reverse_walk(
    nodes: list[ir.Node],
    start: ir.Value,
    seed: ir.Value,
    sources,
    table: dict,
    apply,
    b,
    scope: str,
    kind: str = "relevance",
    visited: set | None = None,
) -> dict:
    """The signal at each source reached from `start` (seeded with `seed`); `apply(rule, node, outs)`
    calls a rule of `table` and returns one signal (or None) per input of the node. `visited`, if
    given, is filled with the nodes the signal passed through."""
    dependent = depends_on(nodes, sources)
    signal, refused = {start: seed}, {}
    for node in reversed(nodes):
        outs = [signal.pop(v, None) for v in node.outputs]
        if all(s is None for s in outs) or not any(v in dependent for v in node.inputs if v is not None):
            continue
        if visited is not None:
            visited.add(node)
        rule = table.get(node.op_type)
        b.scope = f"{scope}/{node.name or node.op_type}"
        if rule is None:
            refused[node] = f"no {kind} rule for node {node_label(node)}"
        elif any(s is None for s in outs) and not getattr(rule, "partial_outputs", False):
            refused[node] = (
                f"node {node_label(node)}: the {kind} reaches only some of its outputs; "
                f"{node.op_type} nodes are explained only as a whole"
            )
        else:
            try:
                ins = apply(rule, node, outs)
            except LrpcError as e:
                refused[node] = str(e)
        if node in refused:
            ins = list(node.inputs)  # stand-ins, to keep walking
        for value, s in zip(node.inputs, ins):
            if s is None or value is None or value not in dependent:
                continue
            signal[value] = b.op("Add", signal[value], s) if value in signal else s
    if refused:
        head = f"{len(refused)} nodes cannot be explained: " if len(refused) > 1 else ""
        raise Unexplained(
            head + "; ".join(reversed(refused.values())) + f"; supported ops: {', '.join(sorted(table))}", refused
        )
    return {v: signal.get(v) for v in sources}
