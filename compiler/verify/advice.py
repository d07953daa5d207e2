"""What to try when float32 cannot resolve an explanation: a larger ε, where the file's rules have a small one.

The ε-rule divides each layer's relevance by its pre-activations z + ε·sign(z); where z is small against
float32's rounding of it, so is the quotient's precision (verify/conditioning.py). A stabilizer below
SMALL_EPS is named with the option that raises it: the --rule itself, a --rule-map entry, or the
composite's own ε parameters (`eps`: the layers its table gives `epsilon{eps}`; `stabilizer`: pools, joins
and norms, both named when both are small). Rules without one (z⁺, α/β, flat, w²) and the gradient methods
get no hint, since no ε the user could set is at fault.
"""

from __future__ import annotations

from lrpc_runtime.metadata import KEY_CONVENTION, KEY_METHOD, KEY_RULE

from ..errors import LrpcError
from ..specs import split_spec

SMALL_EPS, SUGGESTED_EPS = 1e-3, "1e-3"
PARAMETER = "parameter "  # tunable_eps's option for a composite's own parameter: "parameter eps"
EPSILON_RULES = ("epsilon", "zero")


def tunable_eps(spec: str, convention: str) -> list[tuple[float, str]]:
    """(ε, the option that sets it) of every zero/epsilon rule the lrpc.rule `spec` gives through an option;
    a composite's own parameter as PARAMETER + its name (eps: the dense layers; stabilizer: pools, joins, norms)."""
    from ..rules.assign import COMPOSITES, EVERYTHING_ELSE, STABILIZERS, build_rule_map

    first, *maps = [part.strip() for part in spec.split(";")]
    composite = next((k for k in COMPOSITES if k.lower() == first.partition(":")[0].strip().lower()), None)
    rule_map = build_rule_map(
        rule=None if composite else first, composite=first if composite else None, rule_map=maps, convention=convention
    )
    settable = lambda r: getattr(r, "name", None) in EPSILON_RULES
    found = [
        (r.eps, f"--rule-map {p}=epsilon:eps={SUGGESTED_EPS})")
        for p, r, user in rule_map.entries
        if user and settable(r)
    ]
    if composite is None:
        return found + [
            (rule_map.default.eps, f"--rule epsilon:eps={SUGGESTED_EPS}) or the default composite")
        ] * settable(rule_map.default)
    templates = dict(COMPOSITES[composite][1])
    ours = [(p, r) for p, r, user in rule_map.entries if not user] + [(EVERYTHING_ELSE, rule_map.default)]
    return found + [
        (r.eps, f"{PARAMETER}{k}")
        for p, r in ours
        if settable(r)
        for k in STABILIZERS
        if "{" + k + "}" in templates.get(p, "")
    ]


def _raised(composite: str, params) -> str:
    """The composite spec as given, with each of `params` set to SUGGESTED_EPS (the others kept)."""
    name, items = split_spec(composite)
    given = {k: v for k, v in items if k not in params}
    return f"{name}:" + ",".join(f"{k}={v}" for k, v in {**given, **dict.fromkeys(params, SUGGESTED_EPS)}.items())


def eps_hint(meta: dict[str, str]) -> str:
    """A sentence naming the file's smallest settable ε and how to raise it, or "" when none is small."""
    if KEY_METHOD in meta:
        return ""
    try:
        found = tunable_eps(meta.get(KEY_RULE, ""), meta.get(KEY_CONVENTION, "lrpc"))
    except (LrpcError, ValueError, KeyError):  # a spec this lrpc does not read: no advice rather than a wrong one
        return ""
    small = sorted((e for e in found if e[0] < SMALL_EPS), key=lambda e: e[0])
    if not small:
        return ""
    eps, option = small[0]
    if option.startswith(PARAMETER):  # a composite's parameters: every one that is small, at once
        from ..rules.assign import STABILIZERS

        params = sorted({o.removeprefix(PARAMETER) for _, o in small if o.startswith(PARAMETER)}, key=STABILIZERS.index)
        option = f"--composite {_raised(meta[KEY_RULE].split(';')[0].strip(), params)})"
    return f"ε = {eps:g} is small against this model's pre-activations; try a larger ε (e.g. {option}"
