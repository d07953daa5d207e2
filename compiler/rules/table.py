"""The relevance rule table: op_type → lowering function.

A lowering function has the signature `rule(node, rel_out, b, cfg) -> list[Value | None]`: it gets the
forward node, the relevance arriving at each of its outputs (None where none arrives), the builder `b`
and the compile configuration, and returns one relevance value per input of the node (None for
weights, constants and shape inputs). It builds nodes only through `b` and has no other effects.

A rule is called with a None entry in `rel_out` only if it was registered with `partial_outputs=True`
(Split: an output nobody explains contributes zeros); for the others the driver reports the node.

A rule registered with `exact_gradient=True` is the op's exact gradient, g_x = Jᵀ g_y (routing: every
output element is a copy of one input element, so Jᵀ routes it back and sums copies); the gradient
table of methods/ reuses it, so a routing op is declared once, here.
"""

from __future__ import annotations

from typing import Callable

RULES: dict[str, Callable] = {}
EXACT_GRADIENT: list[str] = []  # the ops whose rule is also their gradient rule


def relevance_rule(*op_types: str, partial_outputs: bool = False, exact_gradient: bool = False):
    """Register the decorated function as the relevance rule of `op_types`; `partial_outputs`: it
    accepts relevance at only some of a multi-output node's outputs (None for the others);
    `exact_gradient`: the rule is g_x = Jᵀ g_y as well (it ignores its config), the gradient rule too."""

    def register(fn):
        fn.partial_outputs = partial_outputs
        for op in op_types:
            if op in RULES:
                raise ValueError(f"two relevance rules for {op}")
            RULES[op] = fn
            if exact_gradient:
                EXACT_GRADIENT.append(op)
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(RULES)
