"""Relevance that vanishes where a ReLU output is zero lets a layer forget its pre-activation.

A linear layer z = W x + b (or a sum of activations, a residual join) followed by a ReLU, a = max(z, 0),
receives R_z = R_a. When every consumer of a hands back relevance carrying a factor of a itself,

    R_a = a ⊙ c   (c finite)   ⇒   R_z = 0 wherever z ≤ 0,

so the layer's rule needs z only where z > 0, and there z = a:

- each quotient s = R / stab(z) may read a for z: on z ≤ 0 it is 0 / stab(·) = 0 either way (stab ≠ 0);
- a group gated on z > 0 needs no gate: R already vanishes off it; a group gated on z < 0 (γ's
  negative part) receives no relevance at all and is dropped, with its transposed convolution.

The pre-activation z is then used by the ReLU alone: onnxruntime fuses Conv + ReLU in the forward part
and z is not kept until the backward pass — one activation tensor fewer per layer in memory.

Consumers that carry the factor (the x-factor), checked through the graph:
- a linear layer reading a as its x, under a rule whose every term modifies x by x, x⁺ or x⁻
  (ε, LRP-0, z⁺, α-β, γ; not flat, w², zᴮ, whose terms read 1 or the bounds);
- a sum of activations (Add, Sub, Sum with no constant operand): R_xᵢ = σᵢ xᵢ ⊙ s;
- routing ops (MaxPool, Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Relu) when their own
  output's relevance carries the factor: each output value is one input value, and its relevance
  goes to that element (MaxPool: to the winner; a winner of value 0 carries relevance 0).
A graph output carries whatever relevance the target puts there, so it never qualifies.

A Clip at zero, a = min(max(z, 0), hi) (ReLU6: MobileNet's), is zero exactly where z ≤ 0 as well, so the
same argument holds — but a ≠ z above hi, so a cannot stand in for z. Relu(z), built once from z, can:
it equals z wherever relevance is not 0, and it is ≥ 0, so stab = Relu(z) + ε needs no sign test (two
passes instead of the sign test's five: benchmarks/PROFILE.md §10).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

_PROPORTIONAL_INPUTS = {"x", "pos", "neg"}
_ROUTING = {"MaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Relu"}
_SUMS = {"Add", "Sub", "Sum"}
CLIPPED_AT_ZERO = object()  # relu_stand_ins' mark for a z whose only consumer is a Clip at 0


def _scalar_bound(node: ir.Node, index: int) -> float | None:
    """Clip's bound input as a number: ±inf where absent, None where it is not a constant scalar."""
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        return np.inf if index == 2 else -np.inf
    if value.const_value is None or value.const_value.numpy().size != 1:
        return None
    return float(value.const_value.numpy())


def _clips_at_zero(node: ir.Node) -> bool:
    """Clip(z, 0, hi) with hi ≥ 0 or absent: zero exactly where z ≤ 0 (NaN aside, which nothing keeps)."""
    if node.op_type != "Clip":
        return False
    low, high = _scalar_bound(node, 1), _scalar_bound(node, 2)
    return low == 0.0 and high is not None and high >= 0.0


def stand_in(b, stand_ins: dict, z: ir.Value) -> ir.Value | None:
    """What a rule may read for z where relevance vanishes off z > 0 (None: nothing, read z): the ReLU
    output, or Relu(z) — built once — under a Clip at zero."""
    a = stand_ins.get(z)
    if a is CLIPPED_AT_ZERO:
        return b.cached(("relu", z), lambda: b.op("Relu", z))
    return a


def relu_stand_ins(graph: ir.Graph, rule_of, linear_ops) -> dict[ir.Value, ir.Value | object]:
    """{z: a} for each linear layer or sum of activations whose output z goes only to a ReLU
    a = max(z, 0) whose relevance carries the factor a ({z: CLIPPED_AT_ZERO} for a Clip at zero; `stand_in`
    gives the value to read). Run on the model's graph before any relevance node is added to it.

    `rule_of(node)` gives a linear node's rule; `linear_ops` are the op types lowered as linear layers."""
    stand_ins = {}
    for node in graph:
        if node.op_type not in linear_ops and node.op_type not in _SUMS:
            continue
        z = node.outputs[0]
        uses = list(z.uses())
        if z.is_graph_output() or len(uses) != 1 or (uses[0][0].op_type != "Relu" and not _clips_at_zero(uses[0][0])):
            continue
        a = uses[0][0].outputs[0]
        if _carries_factor(a, rule_of, linear_ops, set()):
            stand_ins[z] = a if uses[0][0].op_type == "Relu" else CLIPPED_AT_ZERO
    return stand_ins


def _carries_factor(value: ir.Value, rule_of, linear_ops, seen: set) -> bool:
    """True when the relevance every consumer hands back to `value` is value ⊙ (something finite)."""
    if value.is_graph_output() or value in seen:
        return False
    seen.add(value)
    for node, index in value.uses():
        if node.op_type in linear_ops:
            rule = rule_of(node)
            ok = index == 0 and all(t.input in _PROPORTIONAL_INPUTS for g in rule.groups for t in g.terms)
        elif node.op_type in _SUMS:
            ok = len(node.inputs) > 1 and all(v is not None and v.const_value is None for v in node.inputs)
        elif node.op_type in _ROUTING:
            ok = (node.op_type == "Concat" or index == 0) and _carries_factor(
                node.outputs[0], rule_of, linear_ops, seen
            )
        else:
            ok = False
        if not ok:
            return False
    return True
