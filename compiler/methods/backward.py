"""The backward driver: the gradient flows from the explained tensor back to the sources, g_in = Jᵀ g_out
from the table (table.py), by the reverse walk of walk.py (fan-out adds up: the chain rule)."""

from __future__ import annotations

import onnx_ir as ir

from ..builder import Builder
from ..walk import reverse_walk
from . import elementwise, layers, norms, quantized  # noqa: F401  (fill the table)
from .table import GRADIENTS


def backward(
    nodes: list[ir.Node],
    start: ir.Value,
    seed: ir.Value,
    sources: list[ir.Value],
    b: Builder,
    relu: str = "gradient",
    scope: str = "grad",
    visited: set | None = None,
) -> dict:
    """The gradient of Σ seed ⊙ start with respect to each source (None where none arrives);
    `nodes` in topological order, `relu` the method's ReLU mode."""
    return reverse_walk(
        nodes,
        start,
        seed,
        sources,
        GRADIENTS,
        lambda rule, node, g_out: rule(node, g_out, b, relu),
        b,
        scope,
        kind="gradient",
        visited=visited,
    )
