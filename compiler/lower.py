"""The lowering driver: relevance flows from the explained tensor back to the model inputs.

Nodes are visited in reverse topological order. A node whose outputs carry relevance and whose
inputs depend on a model input gets its rule from the table (rules/table.py), with None for outputs no
relevance reaches (rules registered with partial_outputs accept that); relevance reaching a
value from several consumers is summed (fan-out: R_v = Σ_consumers R_v,c). Values that do not
depend on a model input (weights, shape chains) receive none.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import onnx_ir as ir

from . import rules  # noqa: F401  (registers every rule module)
from .builder import Builder
from .errors import LrpcError, node_label
from .rules.assign import ProductRule, default_product_rule
from .rules.linear import LAYERS as LINEAR_OPS
from .rules.lrp import Rule
from .rules.sparsity import relu_stand_ins
from .rules.table import RULES, supported_ops


@dataclass(frozen=True)
class LoweringConfig:
    """What the rules need to know: each linear layer's rule (rules/assign.py), else `default`, and each
    product of two activations' rule (rules/gates.py)."""

    default: Rule
    assigned: dict = field(default_factory=dict)
    relu_stand_ins: dict = field(default_factory=dict)  # a linear layer's z → its ReLU output (rules/sparsity.py)

    def rule_for(self, node: ir.Node) -> Rule:
        rule = self.assigned.get(node, self.default)
        return rule if isinstance(rule, Rule) else self.default

    def product_rule_for(self, node: ir.Node) -> str:
        rule = self.assigned.get(node)
        return (rule if isinstance(rule, ProductRule) else default_product_rule(node)).name


def _input_dependent(graph: ir.Graph) -> set[ir.Value]:
    reached = set(graph.inputs)
    for node in graph:
        if any(v in reached for v in node.inputs if v is not None):
            reached.update(node.outputs)
    return reached


def propagate(graph: ir.Graph, start: ir.Value, r0: ir.Value, cfg: LoweringConfig, b: Builder) -> dict:
    """Relevance at each graph input reached from `start` (value → relevance value)."""
    dependent = _input_dependent(graph)
    cfg = replace(cfg, relu_stand_ins=relu_stand_ins(graph, cfg.rule_for, LINEAR_OPS))  # before rules add nodes
    relevance = {start: r0}
    for node in reversed(list(graph)):
        rel_out = [relevance.pop(v, None) for v in node.outputs]
        if all(r is None for r in rel_out) or not any(v in dependent for v in node.inputs if v is not None):
            continue
        rule = RULES.get(node.op_type)
        if rule is None:
            raise LrpcError(f"no relevance rule for node {node_label(node)}; supported ops: "
                            f"{', '.join(supported_ops())}")
        if any(r is None for r in rel_out) and not getattr(rule, "partial_outputs", False):
            raise LrpcError(f"node {node_label(node)}: relevance reaches only some of its outputs; "
                            f"{node.op_type} nodes are explained only as a whole")
        b.scope = f"lrp/{node.name or node.op_type}"
        rel_in = rule(node, rel_out, b, cfg)
        for value, r in zip(node.inputs, rel_in):
            if r is None or value is None or value not in dependent:
                continue
            relevance[value] = b.op("Add", relevance[value], r) if value in relevance else r
    return {v: relevance.get(v) for v in graph.inputs}
