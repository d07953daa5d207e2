"""The LRP rules of linear layers as data, and parsing of rule specs like `epsilon:eps=1e-6`.

For a linear layer z = W x + b, a rule is a list of groups; a group is a coefficient c, an optional
gate on the sign of the forward z, and terms (σ, input modifier mᵢ, weight transform fᵢ, bias
transform gᵢ). Each group computes

    z_g  = Σᵢ σᵢ · (fᵢ(W) mᵢ(x) + gᵢ(b))
    s_g  = gate · R / stab(z_g)          stab(z) = z + ε·sign₀(z), sign₀(0) = +1 (ε = 0: safe division)
    R_in = Σ_g c_g · Σᵢ σᵢ · mᵢ(x) ⊙ fᵢ(W)ᵀ s_g

Input modifiers: x, x⁺ = max(x, 0), x⁻ = min(x, 0), 1 (ones), l and h (the zbox bounds).
Weight/bias transforms: W, W⁺, W⁻, W², ones, W + γW⁺, W + γW⁻, or None (no bias).
The forms follow Zennit's: α-β activator z⁺ = W⁺x⁺ + W⁻x⁻ + b⁺, inhibitor W⁻x⁺ + W⁺x⁻ + b⁻.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LrpcError
from ..specs import finite_number, split_spec

DEFAULT_EPS = 1e-6


@dataclass(frozen=True)
class Term:
    sign: float
    input: str  # "x" | "pos" | "neg" | "ones" | "low" | "high"
    weight: tuple  # transform key, e.g. ("id",), ("pos",), ("gamma", 0.25, "pos")
    bias: tuple | None


@dataclass(frozen=True)
class Group:
    coef: float
    terms: tuple[Term, ...]
    gate: str | None = None  # None | "pos" | "neg": keep outputs whose forward z is > 0 / < 0


@dataclass(frozen=True)
class Rule:
    name: str
    params: tuple  # ((name, value), ...) as given, for printing and metadata
    groups: tuple[Group, ...]
    eps: float = DEFAULT_EPS
    low: float = 0.0
    high: float = 0.0

    @property
    def spec(self) -> str:
        args = ",".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.name}:{args}" if args else self.name


ID, POS, NEG, SQ, ONES = ("id",), ("pos",), ("neg",), ("sq",), ("ones",)


def _epsilon(eps):
    return dict(groups=(Group(1.0, (Term(1, "x", ID, ID),)),), eps=eps)


def _alphabeta(alpha, beta, convention="lrpc"):
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
        raise LrpcError(
            f"alphabeta needs alpha ≥ 0, beta ≥ 0 and alpha − beta = 1 (got alpha={alpha:g}, beta={beta:g})"
        )
    if convention == "innvestigate":  # both parts carry the whole bias b⁺ + b⁻; safe division, no ε
        groups = [Group(alpha, (Term(1, "pos", POS, POS), Term(1, "neg", NEG, NEG)))]
        if beta:
            groups.append(Group(-beta, (Term(1, "pos", NEG, NEG), Term(1, "neg", POS, POS))))
        return dict(groups=tuple(groups), eps=0.0)
    groups = [Group(alpha, (Term(1, "pos", POS, POS), Term(1, "neg", NEG, None)))]
    if beta:
        groups.append(Group(-beta, (Term(1, "pos", NEG, NEG), Term(1, "neg", POS, None))))
    return dict(groups=tuple(groups))


def _zplus(convention="lrpc"):
    if convention == "innvestigate":  # iNNvestigate's z⁺ ignores the bias
        return dict(groups=(Group(1.0, (Term(1, "pos", POS, None), Term(1, "neg", NEG, None))),), eps=0.0)
    return _alphabeta(1.0, 0.0, convention)


def _w2(convention="lrpc"):
    bias = None if convention == "innvestigate" else SQ  # iNNvestigate's z = W²·1, without b²
    return dict(groups=(Group(1.0, (Term(1, "ones", SQ, bias),)),))


def _gamma(gamma):
    up, down = ("gamma", gamma, "pos"), ("gamma", gamma, "neg")
    return dict(
        groups=(
            Group(1.0, (Term(1, "pos", up, up), Term(1, "neg", down, None)), gate="pos"),
            Group(1.0, (Term(1, "pos", down, down), Term(1, "neg", up, None)), gate="neg"),
        )
    )


def _zbox(low, high):
    if not low < high:
        raise LrpcError(f"zbox needs low < high (got low={low:g}, high={high:g})")
    terms = (Term(1, "x", ID, ID), Term(-1, "low", POS, POS), Term(-1, "high", NEG, NEG))
    return dict(groups=(Group(1.0, terms),), low=low, high=high)


# name → (builder, default parameters; None marks a required one, doc)
RULE_TABLE = {
    "zero": (lambda: _epsilon(0.0), {}, "LRP-0: z = Wx + b, R_in = x ⊙ Wᵀ(R/z), 0 where z = 0"),
    "epsilon": (_epsilon, {"eps": DEFAULT_EPS}, "LRP-ε: z stabilized by ε·sign₀(z)"),
    "zplus": (lambda **c: _zplus(**c), {}, "z⁺: positive contributions only (= alphabeta α=1, β=0)"),
    "alphabeta": (_alphabeta, {"alpha": 1.0, "beta": 0.0}, "LRP-αβ: α·positive − β·negative parts, α − β = 1"),
    "w2": (lambda **c: _w2(**c), {}, "w²: R_in = (W²)ᵀ(R/z) with z = W²·1 + b², input-independent"),
    "flat": (
        lambda: dict(groups=(Group(1.0, (Term(1, "ones", ONES, None),)),)),
        {},
        "flat: all weights 1, no bias; the kernel's structure (groups) is kept",
    ),
    "gamma": (_gamma, {"gamma": 0.25}, "LRP-γ (Zennit's generalized form): W + γW⁺ on positive outputs"),
    "zbox": (_zbox, {"low": None, "high": None}, "zᴮ: for the first layer on inputs bounded in [low, high]"),
}
ALIASES = {
    "alpha1beta0": ("alphabeta", {"alpha": 1.0, "beta": 0.0}),
    "alpha2beta1": ("alphabeta", {"alpha": 2.0, "beta": 1.0}),
    "lrp0": ("zero", {}),
    "wsquare": ("w2", {}),
}


CONVENTIONS = {  # convention → default ε (the start relevance is chosen in targets.py)
    "lrpc": 1e-6,
    "zennit": 1e-6,
    "innvestigate": 1e-7,
    "lxt": 1e-12,
}


def parse_rule(spec: str, convention: str = "lrpc") -> Rule:
    """`'epsilon:eps=0.25'`, `'alphabeta:alpha=2,beta=1'`, `'zbox:low=-1,high=1'`, `'alpha1beta0'` → Rule.
    `convention` sets the default ε and, for "innvestigate", its α-β bias form."""
    name, items = split_spec(spec)
    name = name.lower()
    given = dict(ALIASES[name][1]) if name in ALIASES else {}
    name = ALIASES[name][0] if name in ALIASES else name
    if name not in RULE_TABLE:
        known = ", ".join(sorted([*RULE_TABLE, *ALIASES]))
        raise LrpcError(f"unknown rule '{spec}'; known rules: {known}")
    build, defaults, _ = RULE_TABLE[name]
    for key, text in items:
        if key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise LrpcError(f"rule '{name}' has no parameter '{key}' (its parameters: {allowed})")
        if text is None:
            raise LrpcError(f"rule '{name}': write parameters as {key}=VALUE")
        given[key] = finite_number(text, f"rule '{name}': parameter {key}")
    params = {**defaults, **({"eps": CONVENTIONS[convention]} if "eps" in defaults else {}), **given}
    missing = [k for k, v in params.items() if v is None]
    if missing:
        example = ",".join(f"{k}=…" for k in defaults)
        raise LrpcError(f"rule '{name}' needs {', '.join(missing)}: e.g. --rule {name}:{example}")
    if params.get("eps", 0.0) < 0:
        raise LrpcError(f"rule '{name}': eps must be ≥ 0")
    built = build(**params, **({"convention": convention} if name in ("alphabeta", "zplus", "w2") else {}))
    return Rule(name=name, params=tuple(params.items()), **{"eps": CONVENTIONS[convention], **built})


def describe_rules() -> str:
    """One line per rule with its parameters and defaults (for --help and the README)."""
    lines = []
    for name, (_, defaults, doc) in RULE_TABLE.items():
        args = ",".join(f"{k}={'REQUIRED' if v is None else f'{v:g}'}" for k, v in defaults.items())
        lines.append(f"  {name + (':' + args if args else ''):<32} {doc}")
    lines.append(
        "  aliases: "
        + ", ".join(
            f"{a} = {n}" + (":" + ",".join(f"{k}={v:g}" for k, v in p.items()) if p else "")
            for a, (n, p) in ALIASES.items()
        )
    )
    return "\n".join(lines)
