"""Which rule each linear layer gets: one rule, a named composite, and per-layer rule maps.

A rule map is an ordered list `PATTERN=RULE`; a layer takes the rule of the first pattern that
matches it, else the composite's, else the default rule. Patterns:

    first, last          the first / last linear layer in graph order (average pools excluded)
    conv, dense, pool    layer classes: Conv/ConvTranspose, Gemm/MatMul, and the depthwise convs
                         that average pooling was canonized into
    Conv, ConvTranspose, Gemm, MatMul    an ONNX op type (pools excluded)
    anything else        a glob on the node name, or on one of its `/`-separated scopes (a Keras
                         layer `conv1` matches tf2onnx's `model/conv1_1/BiasAdd`)

Composites (their references' meaning; ε is the convention's unless given):

    EpsilonPlus               conv: zplus, dense: epsilon                         (Zennit)
    EpsilonPlusFlat           + first: flat                                       (Zennit; lrpc's default)
    EpsilonAlpha2Beta1[Flat]  conv: alpha2beta1, dense: epsilon [, first: flat]   (Zennit)
    EpsilonGammaBox           first: zbox(low, high), conv: gamma(0.25), dense: epsilon (Zennit)
    ExcitationBackprop        conv, dense: zplus                                  (Zennit)
    A, B, AFlat, BFlat        conv: alpha1beta0 (A) / alpha2beta1 (B), dense: epsilon(0.1) [, first: flat]
                              (iNNvestigate's sequential presets)
    AttnLRP                   conv, dense: epsilon(1e-12), product: half          (Achtibat et al. 2024; LXT)
    CPLRP                     conv, dense: epsilon(1e-12), product: gate-constant (Ali et al. 2022; LXT's cp_LRP)

A graph with attention (a MatMul of two activations) gets AttnLRP when no rule or composite is given;
any other graph EpsilonPlusFlat. CPLRP holds the attention weights fixed (no relevance reaches q and k)
and, in a gated MLP act(x·W_g)·(x·W_u), the activated factor. Under both, ε is 1e-12 — LXT's gradient ×
input is LRP-0; ε = 1e-6 at a LayerNorm output y ≈ 1e-5 makes the float32 map depend on y's rounding
(timm's ViT: 6e-4 from float64, 1.4e-6 at 1e-12) — also for joins, norms and products, and a constant
addend (a position embedding, a bias added on its own) absorbs its share, as in the papers'
gradient × input: handing its unit's whole relevance to x would divide it by a pre-addend value that
may be near 0 (float32-unstable in ViTs).

Average pools, joins, norms and products' ε take epsilon with the composite's `stabilizer` (the
convention's ε unless given; Zennit's Norm rule on Sum and AvgPool, its composites' `stabilizer=`), `eps`
sets the dense layers' ε; AttnLRP and CPLRP have one ε for all.

Products of two activations (passes/recognize_products.py: a squeeze-excitation gate, GLU, a gated
MLP) take a product rule (rules/gates.py), matched by the class pattern `product` or a name glob:
`gate-constant` (the gate held fixed) or `half` (split equally). Default: gate-constant where one
factor is a gate — a Sigmoid, HardSigmoid, Tanh or Clip output, so all relevance stays with the gated
signal, as LRP does for gated units and as the squeeze-excitation nets of Zennit-style composites are
explained —, half where neither factor is one.

Sums of two or more activations (residual joins) split relevance with the ε of their rule: the
composite's stabilizer (else the default rule's), unless the class pattern `join` or a name glob gives
them one (`join=epsilon:eps=0.01`).
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass

import onnx_ir as ir

from ..errors import LrpcError
from ..ops import CONV_OPS, DENSE_OPS, LINEAR_OPS
from ..specs import split_spec
from ..passes.quantized import is_constant
from ..passes.recognize_products import GATE, KIND
from .gates import PRODUCT_RULES
from .lrp import Rule, parse_rule

CLASSES = {"conv": CONV_OPS, "dense": DENSE_OPS}
ORIGIN = "lrpc.origin"
PRODUCT = "product"  # the class pattern of products of two activations
JOIN = "join"  # the class pattern of sums of activations (residual joins), whose rules give their ε
EVERYTHING_ELSE = "*"  # a composite's rule for what no pattern names: joins, norms, products' ε
STABILIZERS = ("eps", "stabilizer")  # composite parameters that set an ε rule's ε (unset: the convention's)


@dataclass(frozen=True)
class ProductRule:
    """The rule of a product of two activations: "gate-constant" or "half" (rules/gates.py)."""

    name: str

    @property
    def spec(self) -> str:
        return self.name


def default_product_rule(node: ir.Node) -> ProductRule:
    """gate-constant for a Mul by a gate, half otherwise (attention's q·kᵀ and A·v: AttnLRP)."""
    return ProductRule("gate-constant" if node.meta.get(GATE) is not None and node.op_type != "MatMul" else "half")


def is_product(node: ir.Node) -> bool:
    return node.meta.get(KIND) == "product"


def is_join(node: ir.Node) -> bool:
    """A sum of two or more activations (a residual join): its rule's ε stabilizes R / (Σ xᵢ)."""
    return node.op_type in ("Add", "Sub", "Sum") and sum(v is not None and not is_constant(v) for v in node.inputs) >= 2


COMPOSITES = {  # name → (parameters with defaults, [(pattern, rule spec template)])
    "EpsilonPlus": ({"eps": None, "stabilizer": None}, [("conv", "zplus"), ("dense", "epsilon{eps}")]),
    "EpsilonPlusFlat": (
        {"eps": None, "stabilizer": None},
        [("first", "flat"), ("conv", "zplus"), ("dense", "epsilon{eps}")],
    ),
    "EpsilonAlpha2Beta1": ({"eps": None, "stabilizer": None}, [("conv", "alpha2beta1"), ("dense", "epsilon{eps}")]),
    "EpsilonAlpha2Beta1Flat": (
        {"eps": None, "stabilizer": None},
        [("first", "flat"), ("conv", "alpha2beta1"), ("dense", "epsilon{eps}")],
    ),
    "EpsilonGammaBox": (
        {"low": "REQUIRED", "high": "REQUIRED", "gamma": "0.25", "eps": None, "stabilizer": None},
        [("first", "zbox:low={low},high={high}"), ("conv", "gamma:gamma={gamma}"), ("dense", "epsilon{eps}")],
    ),
    "ExcitationBackprop": ({"stabilizer": None}, [("conv", "zplus"), ("dense", "zplus")]),
    "A": ({"eps": "0.1", "stabilizer": None}, [("conv", "alpha1beta0"), ("dense", "epsilon{eps}")]),
    "B": ({"eps": "0.1", "stabilizer": None}, [("conv", "alpha2beta1"), ("dense", "epsilon{eps}")]),
    "AFlat": (
        {"eps": "0.1", "stabilizer": None},
        [("first", "flat"), ("conv", "alpha1beta0"), ("dense", "epsilon{eps}")],
    ),
    "BFlat": (
        {"eps": "0.1", "stabilizer": None},
        [("first", "flat"), ("conv", "alpha2beta1"), ("dense", "epsilon{eps}")],
    ),
    "AttnLRP": ({"eps": "1e-12"}, [("conv", "epsilon{eps}"), ("dense", "epsilon{eps}"), ("product", "half")]),
    "CPLRP": ({"eps": "1e-12"}, [("conv", "epsilon{eps}"), ("dense", "epsilon{eps}"), ("product", "gate-constant")]),
}
# Average pools and what no pattern names (joins, norms, products' ε) take the composite's stabilizer: Zennit's
# Norm rule on Sum and AvgPool, `stabilizer=` in its composites; AttnLRP's and CPLRP's one ε is theirs too.
for _defaults, _table in COMPOSITES.values():
    _own = "{stabilizer}" if "stabilizer" in _defaults else "{eps}"
    _table[:0] = [("pool", f"epsilon{_own}")]
    _table.append((EVERYTHING_ELSE, f"epsilon{_own}"))
ABSORBING = ("AttnLRP", "CPLRP")  # composites under which a constant addend takes its share (rules/combine.py)
DEFAULT_COMPOSITE = "EpsilonPlusFlat"
ATTENTION_COMPOSITE = "AttnLRP"


def has_attention(graph: ir.Graph) -> bool:
    return any(n.op_type == "MatMul" and is_product(n) for n in graph)


@dataclass(frozen=True)
class RuleMap:
    """Ordered (pattern, rule) pairs and the rule for layers no pattern matches."""

    entries: tuple[tuple[str, Rule | ProductRule, bool], ...]  # (pattern, rule, given by the user)
    default: Rule
    spec: str  # "RULE" or "COMPOSITE", then "; PATTERN=RULE" per map entry (metadata, `lrpc inspect`)
    absorb_constants: bool = False  # a constant addend takes its share (AttnLRP, CPLRP; rules/combine.py)

    def assign(self, graph: ir.Graph) -> dict[ir.Node, Rule | ProductRule]:
        """The rule of every linear layer and every product of two activations; a pattern given by the
        user that matches none is an error."""
        layers = [n for n in graph if n.op_type in LINEAR_OPS]
        real = [n for n in layers if n.meta.get(ORIGIN) != "pool"]
        ends = {"first": real[:1], "last": real[-1:]}
        chosen, used = {}, set()
        for node, kind, fallback in [
            *((n, Rule, lambda n: self.default) for n in layers),
            *((n, ProductRule, default_product_rule) for n in graph if is_product(n)),
            *((n, Rule, None) for n in graph if is_join(n)),
        ]:
            for pattern, rule, _ in self.entries:
                if isinstance(rule, kind) and matches(node, pattern, ends):
                    chosen[node] = rule
                    used.add(pattern)
                    break
            else:
                if fallback is not None:  # a join no pattern names keeps the default rule's ε
                    chosen[node] = fallback(node)
        unused = [(p, r) for p, r, user in self.entries if user and p not in used]
        if unused:
            pattern, rule = unused[0]
            if isinstance(rule, ProductRule) or pattern == JOIN:
                what = "product of two activations" if isinstance(rule, ProductRule) else "sum of activations"
                raise LrpcError(
                    f"rule map pattern '{pattern}={rule.spec}' matches no {what} (`lrpc inspect` lists them)"
                )
            names = ", ".join(f"{n.name or '<unnamed>'} ({n.op_type})" for n in layers[:12])
            raise LrpcError(f"rule map pattern '{pattern}' matches no linear layer; the layers are: {names}")
        return chosen


def name_matches(name: str | None, pattern: str) -> bool:
    """A glob on the whole name or on one of its scopes (Keras' `conv1` also as tf2onnx's `conv1_1`)."""
    if not name:
        return False
    scopes = name.split("/")
    return fnmatch.fnmatchcase(name, pattern) or any(
        fnmatch.fnmatchcase(s, pattern) or fnmatch.fnmatchcase(s, f"{pattern}_1") for s in scopes[:-1]
    )


def matches(node: ir.Node, pattern: str, ends: dict) -> bool:
    pool = node.meta.get(ORIGIN) == "pool"
    if pattern == PRODUCT:
        return is_product(node)
    if pattern == JOIN or is_join(node):
        return (
            pattern == JOIN
            and is_join(node)
            or pattern not in (*ends, "pool", *CLASSES, *LINEAR_OPS)
            and name_matches(node.name, pattern)
        )
    if pattern in ends:
        return node in ends[pattern]
    if pattern == "pool":
        return pool
    if pattern in CLASSES:
        return not pool and node.op_type in CLASSES[pattern]
    if pattern in LINEAR_OPS:
        return not pool and node.op_type == pattern
    return name_matches(node.name, pattern)


def _composite_entries(spec: str, convention: str) -> list[tuple[str, Rule, bool]]:
    name, items = split_spec(spec)
    key = {k.lower(): k for k in COMPOSITES}.get(name.lower())
    if key is None:
        raise LrpcError(f"unknown composite '{name}'; known: {', '.join(COMPOSITES)}")
    defaults, table = COMPOSITES[key]
    params = dict(defaults)
    for k, v in items:
        if k not in defaults or v is None:
            raise LrpcError(
                f"composite {key} takes {', '.join(f'{p}=…' for p in defaults) or 'no parameters'}, "
                f"not '{k}{'' if v is None else '=' + v}'"
            )
        params[k] = v
    missing = [k for k, v in params.items() if v == "REQUIRED"]
    if missing:
        raise LrpcError(f"composite {key} needs {', '.join(missing)}: e.g. --composite {key}:low=-1,high=1")
    fill = {k: v if k not in STABILIZERS else f":eps={v}" if v else "" for k, v in params.items()}
    return [(pattern, parse_any_rule(pattern, rule.format(**fill), convention), False) for pattern, rule in table]


def build_rule_map(
    rule: str | None = None,
    composite: str | None = None,
    rule_map=(),
    rule_map_file: str | None = None,
    convention: str = "lrpc",
    attention: bool = False,
) -> RuleMap:
    """The rule assignment from the compile options (see the module docstring for the precedence);
    `attention`: the graph has attention, so the default composite is AttnLRP."""
    if rule is not None and composite is not None:
        raise LrpcError("give --rule (one rule for every layer) or --composite, not both")
    for flag, value in (("--rule", rule), ("--composite", composite)):
        if value is not None and not value.strip():
            raise LrpcError(
                f"{flag} is empty: give a name, e.g. {flag} "
                + ("epsilon:eps=1e-6" if flag == "--rule" else DEFAULT_COMPOSITE)
            )
    entries = list(_parse_entries(rule_map, convention))
    if rule_map_file is not None:
        file_rule, file_composite, file_entries = _read_rule_file(rule_map_file, convention)
        entries += file_entries
        rule, composite = rule or file_rule, composite or file_composite
    if rule is None and composite is None:
        composite = ATTENTION_COMPOSITE if attention else DEFAULT_COMPOSITE
    default = parse_rule(rule or "epsilon", convention)
    if composite is not None:
        entries += _composite_entries(composite, convention)
        default = next((r for p, r, _ in entries if p == EVERYTHING_ELSE), default)
        entries = [e for e in entries if e[0] != EVERYTHING_ELSE]
    spec = [default.spec if rule else composite] + [f"{p}={r.spec}" for p, r, user in entries if user]
    absorb = composite is not None and composite.partition(":")[0].strip().lower() in {c.lower() for c in ABSORBING}
    return RuleMap(tuple(entries), default, "; ".join(spec), absorb)


def _parse_entries(items, convention: str):
    for item in items:
        pattern, eq, rule = item.partition("=")
        if not eq or not pattern.strip() or not rule.strip():
            raise LrpcError(f"--rule-map takes PATTERN=RULE (e.g. 'conv1=flat'), not '{item}'")
        yield pattern.strip(), parse_any_rule(pattern.strip(), rule, convention), True


def parse_any_rule(pattern: str, spec: str, convention: str) -> Rule | ProductRule:
    """A linear layer's rule, or a product rule (gate-constant, half); the class `product` takes only those."""
    name = spec.strip().lower()
    if name in PRODUCT_RULES:
        return ProductRule(name)
    if pattern == PRODUCT:
        raise LrpcError(f"'{pattern}={spec}': products of two activations take the rule {' or '.join(PRODUCT_RULES)}")
    return parse_rule(spec, convention)


def _read_rule_file(path: str, convention: str):
    """TOML: optional top-level `rule` or `composite`, and a `[rules]` table PATTERN = "RULE" (in order)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise LrpcError(f"cannot read the rule map file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise LrpcError(f"{path} is not valid TOML: {e}") from None
    unknown = set(data) - {"rule", "composite", "rules"}
    if unknown:
        raise LrpcError(f"{path}: unknown keys {sorted(unknown)}; expected rule, composite and a [rules] table")
    table = data.get("rules", {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise LrpcError(f'{path}: [rules] maps patterns to rule strings, e.g. conv1 = "flat"')
    return (
        data.get("rule"),
        data.get("composite"),
        list(_parse_entries([f"{k}={v}" for k, v in table.items()], convention)),
    )


def describe_composites() -> str:
    def shown(template: str) -> str:
        return template.replace("{eps}", "(eps)").replace("{stabilizer}", "(stabilizer)")

    return "\n".join(
        f"  {name}{':' + ','.join(f'{k}=…' for k in d) if d else ''}: "
        + ", ".join(
            f"{'pools, joins, norms' if p == EVERYTHING_ELSE else p}={shown(r)}" for p, r in table if p != "pool"
        )
        for name, (d, table) in COMPOSITES.items()
    )
