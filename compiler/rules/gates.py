"""Products and quotients of two activations (what they are is recognised in passes/recognize_products.py).

For y = a ⊙ b (a Mul) or y = a / b (a Div), both operands activations, R the relevance at y:

    self-gated activation, normalizer, quotient:   R_signal = unbroadcast(R),  the other operand none
    product, rule "gate-constant":                 R_signal = unbroadcast(R),  the gate none
    product, rule "half":                          R_a = unbroadcast(½R),  R_b = unbroadcast(½R)

The first line holds the second factor fixed: a gated activation's own gate (x·σ(x) is one activation,
y = x for relevance), a norm's denominator, a divisor. "gate-constant" does the same for a gate
computed elsewhere (a squeeze-excitation gate σ(W·pool x), GLU's σ(b)) — or, where no factor is a gate, the
one computed by an activation (a gated MLP's SiLU(x·W_g) beside x·W_u, as LXT's CP-LRP holds it): the
signal-take-all rule of LRP for gated units, and the conservative propagation of Ali et al. 2022. "half"
splits each unit's relevance equally between its factors: AttnLRP's uniform rule (Achtibat et al. 2024),
for products of two signals.
Both conserve: Σ R_in = Σ R. A product with a constant (a scale) keeps its relevance in the unit.
"""

from __future__ import annotations

from ..errors import LrpcError, node_label
from ..passes.recognize_products import ACTIVATED, GATE, KIND, NAME, SIGNAL
from .combine import _activations, _keep_with_unit, unbroadcast
from .table import relevance_rule

PRODUCT_RULES = {  # name → doc (the rule of a product of two activations)
    "gate-constant": "the gate (a sigmoid-like factor) held fixed: all relevance to the gated signal",
    "half": "relevance split equally between the two factors (AttnLRP's uniform rule)",
}


def signal_operand(node, cfg) -> int | None:
    """The operand of a product or quotient of two activations that takes all relevance (the other
    held fixed), or None where the product rule is half (both take half)."""
    kind = node.meta.get(KIND)
    if kind in ("activation", "normalizer", "quotient"):
        return node.meta[SIGNAL]
    if cfg.product_rule_for(node) != "gate-constant":
        return None
    gate = node.meta.get(GATE, node.meta.get(ACTIVATED))
    if gate is None:
        raise LrpcError(
            f"{node_label(node)}: rule gate-constant, but neither factor of this "
            f"{node.meta.get(NAME, 'product')} is a gate (a Sigmoid, HardSigmoid, Tanh or Clip "
            "output) or the one computed by an activation; give it the rule half, e.g. "
            "--rule-map 'product=half'"
        )
    return 1 - gate


@relevance_rule("Mul", "Div")
def product(node, rel_out, b, cfg):
    live, r = _activations(node), rel_out[0]
    if len(live) == 1:
        return _keep_with_unit(node, r, b, live[0])
    signal = signal_operand(node, cfg)
    if signal is not None:
        return _keep_with_unit(node, r, b, signal)
    half = b.op("Mul", r, b.const(0.5))
    return [unbroadcast(b, half, v, node.outputs[0]) for v in node.inputs]
