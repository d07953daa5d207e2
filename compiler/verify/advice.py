"""What to try when float32 cannot resolve an explanation: a larger ε, where the file's rules have a small one.

The ε-rule divides each layer's relevance by its pre-activations z + ε·sign(z); where z is small against
float32's rounding of it, so is the quotient's precision (verify/conditioning.py). A stabilizer below
SMALL_EPS is named with the option that raises it: the --rule itself, a --rule-map entry, or the
composite's own ε parameter (the layers its table gives `epsilon{eps}`). Rules without one (z⁺, α/β,
flat, w²), a composite's fixed ε and the gradient methods get no hint, since no ε the user set is at fault.
"""

from __future__ import annotations

from ..errors import LrpcError

SMALL_EPS, SUGGESTED_EPS = 1e-3, "1e-3"
EPSILON_RULES = ("epsilon", "zero")


def tunable_eps(spec: str, convention: str) -> list[tuple[float, str]]:
    """(ε, the option that sets it) of every zero/epsilon rule the lrpc.rule `spec` gives through an option."""
    from ..rules.assign import COMPOSITES, build_rule_map

    first, *maps = [part.strip() for part in spec.split(";")]
    composite = next((k for k in COMPOSITES if k.lower() == first.partition(":")[0].strip().lower()), None)
    rule_map = build_rule_map(rule=None if composite else first, composite=first if composite else None,
                              rule_map=maps, convention=convention)
    own = {p for p, template in COMPOSITES[composite][1] if "{eps}" in template} if composite else set()
    found = [(None, rule_map.default, "--rule")] * (composite is None) + \
        [(p, r, "--rule-map" if user else "--composite") for p, r, user in rule_map.entries if user or p in own]
    options = {"--rule": f"--rule epsilon:eps={SUGGESTED_EPS}) or the default composite",
               "--composite": f"--composite {composite}:eps={SUGGESTED_EPS})"}
    return [(r.eps, options.get(how) or f"--rule-map {p}=epsilon:eps={SUGGESTED_EPS})")
            for p, r, how in found if getattr(r, "name", None) in EPSILON_RULES]


def eps_hint(meta: dict[str, str]) -> str:
    """A sentence naming the file's smallest settable ε and how to raise it, or "" when none is small."""
    if "lrpc.method" in meta:
        return ""
    try:
        found = tunable_eps(meta.get("lrpc.rule", ""), meta.get("lrpc.convention", "lrpc"))
    except (LrpcError, ValueError, KeyError):  # a spec this lrpc does not read: no advice rather than a wrong one
        return ""
    small = sorted((e for e in found if e[0] < SMALL_EPS), key=lambda e: e[0])
    if not small:
        return ""
    eps, option = small[0]
    return f"ε = {eps:g} is small against this model's pre-activations; try a larger ε (e.g. {option}"
