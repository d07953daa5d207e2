"""Option specs `NAME:key=value,key=value` (rules, composites, gradient methods): split once, numbers checked.

    "alphabeta:alpha=2,beta=1"  →  ("alphabeta", [("alpha", "2"), ("beta", "1")])
    "epsilon:eps"               →  ("epsilon", [("eps", None)])        (no '=': the caller says how to write it)

A number is accepted only when it is finite: a NaN or infinite ε, α, γ, bound or noise gives NaN or
all-zero relevance maps, never a useful one.
"""

from __future__ import annotations

import math

from .errors import LrpcError


def split_spec(spec: str) -> tuple[str, list[tuple[str, str | None]]]:
    """(name, [(key, value text or None where no '=' was written), ...]), whitespace stripped."""
    name, _, arg_text = spec.strip().partition(":")
    items = []
    for item in filter(None, (a.strip() for a in arg_text.split(","))):
        key, eq, text = item.partition("=")
        items.append((key.strip(), text.strip() if eq else None))
    return name.strip(), items


def finite_number(text: str, what: str) -> float:
    """`text` as a finite float; `what` names the parameter in the error ("rule 'epsilon': parameter eps")."""
    try:
        value = float(text)
    except ValueError:
        raise LrpcError(f"{what} needs a number, got '{text}'") from None
    if not math.isfinite(value):
        raise LrpcError(f"{what} must be a finite number, got '{text}'")
    return value
