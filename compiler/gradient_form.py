"""LRP-0 rules in gradient form: R = x ⊙ g, with g walked back instead of R (how LXT computes AttnLRP).

Every relevance rule of an LRP-0 lowering (ε = 0 at linear layers, joins, norms and products) has the
form R_in = x ⊙ Jᵀ(R / y) for a (modified) Jacobian J. With g = R / y at every tensor the quotient and
the product cancel, layer by layer, and what is left is a backward pass:

    linear layers, joins, Softmax, routing       g_in = Jᵀ g                  (the plain gradient)
    an activation held as identity (Gelu, …)     g_x = g ⊙ y / stab(x)        (R_x = R_y; Relu, LeakyRelu,
                                                                              PRelu, Neg: the plain gradient)
    a product with one factor held fixed         g_signal = ∂y/∂signal ⊙ g,   the held factor none
      (self-gated, norm denominator, gate)
    a product, rule "half" (q·kᵀ, A·v, gate·up)  g_a = ½ ∂y/∂a ⊙ g,  g_b = ½ ∂y/∂b ⊙ g
    a norm with inv held fixed                   g_x = Jᵀ g, J = diag(γ·inv)(I − 𝟙𝟙ᵀ/n)  (rules/norms.py)

seeded with g₀ = R₀ / y at the explained logits (w for R₀ = w ⊙ y, w / stab(y) for Zennit's R₀ = w); the
relevance of a source is x ⊙ g. Per linear layer this drops the stabilised quotient and the product with
x (five to six element-wise passes over the layer's output and input: benchmarks/PROFILE.md §9, §11),
leaving its adjoint product. It equals the relevance form where ε = 0; the ε = 1e-12 of AttnLRP and CPLRP changes a unit
only where its pre-activation is within ~2²⁴ε of 0, and LXT itself has no ε there. Where z = 0 exactly
the relevance form passes nothing below the unit and the gradient form passes g on (LXT's behaviour).

It is taken when every rule the walk meets is LRP-0-like (ε ≤ 1e-12) and constant addends absorb their
share (AttnLRP, CPLRP, `--convention lxt`); any node outside that — another rule, an op without a
gradient form here (QuantizeLinear) — makes lower.py build the relevance form instead.
"""

from __future__ import annotations

import onnx_ir as ir

from .activations import passing_ops
from .builder import Builder
from .errors import LrpcError, node_label
from .methods.backward import GRADIENTS
from .ops import LINEAR_OPS
from .passes.recognize_products import KIND
from .rules.attention import halve_quotient, receiving_factors
from .rules.combine import _activations
from .rules.gates import signal_operand
from .rules.lrp import Rule, parse_rule
from .rules.norms import held_norm_adjoint
from .rules.table import EXACT_GRADIENT
from .walk import reverse_walk

LRP0_EPS = 1e-12  # the largest ε the gradient form stands in for (AttnLRP's, CPLRP's, the lxt convention's)
_LRP0_GROUPS = parse_rule("zero").groups
PLAIN = {  # ops whose relevance rule, at ε = 0, is x ⊙ Jᵀ(R / y) with J the op's own Jacobian
    *EXACT_GRADIENT,
    *("Add", "Sub", "Sum", "Softmax", "ReduceMean", "ReduceSum", "Resize"),
    *("Conv", "ConvTranspose", "Gemm", "Relu", "LeakyRelu", "PRelu", "Neg"),
}
CHECKED = {*LINEAR_OPS, "Add", "Sub", "Sum", "ReduceMean", "ReduceSum", "Resize"}  # their rules read ε
IDENTITY = [op for op in passing_ops() if op not in PLAIN]  # R_x = R_y (rules/elementwise.py): Gelu, Tanh, …


class NotLrp0(LrpcError):
    """A node whose rule has no gradient form (lower.py then builds the relevance form)."""


def _plain(node, g_out, b):
    return GRADIENTS[node.op_type](node, g_out, b, "gradient")


def _check_lrp0(node, cfg) -> None:
    rule = cfg.rule_for(node)
    if not isinstance(rule, Rule) or rule.groups != _LRP0_GROUPS or rule.eps > LRP0_EPS:
        raise NotLrp0(f"{node_label(node)}: rule {rule.spec} is not LRP-0")


def _only(grads: list, keep) -> list:
    """The gradients of the operands in `keep` (their indices), None for the held ones."""
    return [g if i in keep else None for i, g in enumerate(grads)]


def _halved(b, g_out):
    return [b.op("Mul", g_out[0], b.const(0.5))]


def plain(node, g_out, b, cfg):
    if node.op_type in CHECKED:
        _check_lrp0(node, cfg)
    return _plain(node, g_out, b)


def identity(node, g_out, b, cfg):
    """R_x = R_y: g_x = R_y / x = g ⊙ y / stab(x), the ε of the layer below's quotient."""
    x, y = node.inputs[0], node.outputs[0]
    return [b.op("Mul", g_out[0], b.divide(y, x, LRP0_EPS))] + [None] * (len(node.inputs) - 1)


def product(node, g_out, b, cfg):
    """Mul and Div of two activations: the signal takes the gradient, the held factor none; "half": ½ each."""
    if len(_activations(node)) < 2:
        return _plain(node, g_out, b)  # a scale: the unit keeps its relevance, g passes scaled
    signal = signal_operand(node, cfg)
    if signal is None:
        return _plain(node, _halved(b, g_out), b)
    return _only(_plain(node, g_out, b), {signal})


def matmul(node, g_out, b, cfg):
    """A MatMul with a weight is a layer; O = A·B of two activations takes its product rule."""
    _check_lrp0(node, cfg)
    if node.meta.get(KIND) != "product":
        return _plain(node, g_out, b)
    terms = receiving_factors(node, cfg)
    a, bb = node.inputs
    once = len(terms) == 2 and halve_quotient(node.outputs[0], a, bb)
    grads = _plain(node, _halved(b, g_out) if once else g_out, b)
    if len(terms) == 2 and not once:
        grads = [b.op("Mul", g, b.const(0.5)) for g in grads]
    return _only(grads, terms)


def norm(node, g_out, b, cfg):
    _check_lrp0(node, cfg)
    return [held_norm_adjoint(node, g_out[0], b)] + [None] * (len(node.inputs) - 1)


def _partial(rule):
    """`rule` for a node whose signal reaches only some outputs (Split), as its gradient rule accepts."""

    def partial(node, g_out, b, cfg):
        return rule(node, g_out, b, cfg)

    partial.partial_outputs = True
    return partial


TABLE = {op: plain for op in PLAIN}
TABLE.update({op: _partial(plain) for op in PLAIN if getattr(GRADIENTS[op], "partial_outputs", False)})
TABLE.update({op: identity for op in IDENTITY})
TABLE.update({"Mul": product, "Div": product, "MatMul": matmul})
TABLE.update({op: norm for op in ("LayerNormalization", "InstanceNormalization", "GroupNormalization")})


def usable(cfg, explained: ir.Value, scores: ir.Value) -> bool:
    """Whether the gradient form may stand in for the relevance form, before any node is looked at:
    constant addends absorb their share, and relevance starts at the scores themselves."""
    return cfg.absorb_constants and explained is scores


def seed(b: Builder, w: ir.Value, y: ir.Value, scaled: bool) -> ir.Value:
    """g₀ = R₀ / y: the selection w where R₀ = w ⊙ y, w / stab(y) where R₀ = w (Zennit's start, whose
    first quotient the relevance form takes with the same ε)."""
    return w if scaled else b.divide(w, y, LRP0_EPS)


def gradient_form(graph: ir.Graph, start: ir.Value, g0: ir.Value, cfg, b: Builder, sources) -> dict:
    """{source: x ⊙ g} for g walked back from `start` seeded with `g0` (`seed`); the walk's Unexplained
    (NotLrp0 among the reasons) where a node has no gradient form."""
    grads = reverse_walk(
        list(graph), start, g0, sources, TABLE, lambda rule, node, g: rule(node, g, b, cfg), b, "lrp", "relevance"
    )
    b.scope = "lrp/inputs"
    return {x: None if g is None else b.op("Mul", x, g) for x, g in grads.items()}
