"""The lowering driver: relevance flows from the explained tensor back to the model inputs, through the
rule table (rules/table.py) by the reverse walk of walk.py (fan-out sums R_v = Σ_consumers R_v,c)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import onnx_ir as ir

from . import rules  # noqa: F401  (registers every rule module)
from .builder import Builder
from .gradient_form import gradient_form
from .ops import LINEAR_OPS
from .rules.assign import ProductRule, default_product_rule
from .rules.lrp import Rule
from .rules.sparsity import relu_stand_ins
from .rules.table import RULES
from .walk import Unexplained, reverse_walk


@dataclass(frozen=True)
class LoweringConfig:
    """What the rules need to know: each linear layer's rule (rules/assign.py), else `default`, and each
    product of two activations' rule (rules/gates.py)."""

    default: Rule
    assigned: dict = field(default_factory=dict)
    relu_stand_ins: dict = field(default_factory=dict)  # a linear layer's z → its ReLU output (rules/sparsity.py)
    absorb_constants: bool = False  # a constant addend takes its share (the "lxt" convention, rules/combine.py)

    def rule_for(self, node: ir.Node) -> Rule:
        rule = self.assigned.get(node, self.default)
        return rule if isinstance(rule, Rule) else self.default

    def product_rule_for(self, node: ir.Node) -> str:
        rule = self.assigned.get(node)
        return (rule if isinstance(rule, ProductRule) else default_product_rule(node)).name


def propagate(
    graph: ir.Graph,
    start: ir.Value,
    r0: ir.Value,
    cfg: LoweringConfig,
    b: Builder,
    visited: set | None = None,
    seed: ir.Value | None = None,
) -> dict:
    """Relevance at each graph input reached from `start` (value → relevance value); `visited` collects
    the nodes relevance passed through. Given the gradient `seed` (w, where r0 = w ⊙ start), an LRP-0
    lowering is built in gradient form (gradient_form.py) where every node has one."""
    if seed is not None:
        try:
            return gradient_form(graph, start, seed, cfg, b, list(graph.inputs))
        except Unexplained:
            pass  # what it built is read by nothing: emit.finish drops it
    cfg = replace(cfg, relu_stand_ins=relu_stand_ins(graph, cfg.rule_for, LINEAR_OPS))  # before rules add nodes
    return reverse_walk(
        list(graph),
        start,
        r0,
        list(graph.inputs),
        RULES,
        lambda rule, node, rel_out: rule(node, rel_out, b, cfg),
        b,
        "lrp",
        visited=visited,
    )
