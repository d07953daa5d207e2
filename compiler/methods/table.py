"""The gradient rule table: op_type → backward function, g_in = Jᵀ g_out.

A backward function has the signature `grad(node, g_out, b, relu) -> list[Value | None]`: the
forward node, the gradient arriving at each of its outputs (None where none arrives: only for rules
registered with `partial_outputs=True`), the builder, and the ReLU mode of the method ("gradient",
"guided" or "deconvnet"; only Relu looks at it). It returns one gradient per input of the node
(None for weights, constants and shape inputs), built only through `b`.

Where an LRP rule of rules/ is already the exact gradient (shape ops, routing, MaxPool: every output
element is a copy of one input element, so Jᵀ routes it back and sums copies), it is reused as is
(`reuse_lrp_rule`); those rules do not look at their config.
"""

from __future__ import annotations

from typing import Callable

from ..rules.table import RULES

GRADIENTS: dict[str, Callable] = {}


def gradient_rule(*op_types: str, partial_outputs: bool = False):
    """Register the decorated function as the backward rule of `op_types`."""

    def register(fn):
        fn.partial_outputs = partial_outputs
        for op in op_types:
            if op in GRADIENTS:
                raise ValueError(f"two gradient rules for {op}")
            GRADIENTS[op] = fn
        return fn

    return register


def reuse_lrp_rule(*op_types: str) -> None:
    """The LRP rule of each op is its exact gradient: register it (adapted to the signature above)."""
    for op in op_types:
        lrp = RULES[op]
        gradient_rule(op, partial_outputs=getattr(lrp, "partial_outputs", False))(
            lambda node, g_out, b, relu, lrp=lrp: lrp(node, g_out, b, None)
        )


def supported_gradient_ops() -> list[str]:
    return sorted(GRADIENTS)
