"""Relevance rules of linear layers: Conv and ConvTranspose (1D/2D/3D), Gemm and MatMul by a constant,
each an affine map z = W x + b with `apply` (the op with modified operands) and `apply_t` (Wᵀ s), as
linear_layers.py builds them. The rule of the layer (lrp.py) combines them:

    z_g = Σᵢ σᵢ·apply(mᵢ(x), fᵢ(W), gᵢ(b)),   s_g = R / stab(z_g),   R_in = Σ_g c_g Σᵢ σᵢ·mᵢ(x) ⊙ apply_t(s_g, fᵢ(W))

computed with as few convolutions as the algebra allows: the forward z stands in for W x + b, γ's two
groups share one W⁺x, and each distinct (mᵢ, fᵢ) gets one transposed pass (lower_linear).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_ir as ir

from ..builder import Builder, cofactor
from ..ops import NONNEGATIVE_OPS, SELECTING_OPS
from ..passes.input_normalization import INPUT_AFFINE
from ..passes.recognize_products import KIND
from .attention import bilinear
from .linear_layers import LAYERS, LinearLayer
from .lrp import ID, NEG, ONES, POS, SQ, Rule, Term
from .sparsity import stand_in
from .squares import squares_in_range
from .table import relevance_rule

_VANISHES = object()  # an input modifier that is identically zero here (x⁻ of a non-negative x)


def _keeps_sign(node: ir.Node) -> bool:
    """Routing ops, Pad unless it pads with a negative constant, Resize unless cubic (negative weights)."""
    if node.op_type == "Pad":
        value = node.inputs[2] if len(node.inputs) > 2 else None
        return (
            node.attributes.get_string("mode", "constant") != "constant"
            or value is None
            or (value.const_value is not None and float(value.const_value.numpy().reshape(-1)[0]) >= 0)
        )
    if node.op_type == "Resize":
        return (
            node.attributes.get_string("mode", "nearest") != "cubic"
            and node.attributes.get_string("coordinate_transformation_mode", "half_pixel") != "tf_crop_and_resize"
        )
    return node.op_type in SELECTING_OPS


def is_nonnegative(value: ir.Value) -> bool:
    """True when `value` can never be negative by construction (a ReLU output, pooled, routed, resized,
    or a Concat of such values)."""
    node = value.producer()
    while node is not None and _keeps_sign(node):
        node = node.inputs[0].producer()
    if node is not None and node.op_type == "Concat":
        return all(is_nonnegative(v) for v in node.inputs)
    return node is not None and node.op_type in NONNEGATIVE_OPS


def _transform(b: Builder, w: ir.Value, key: tuple) -> ir.Value:
    """A weight or bias transform as ops on the initializer (folded by onnxruntime at load)."""
    kind = key[0]
    if kind == "id":
        return w
    if kind == "pos":
        make = lambda: b.op("Relu", w)
    elif kind == "neg":
        make = lambda: b.op("Min", w, b.const(0.0))
    elif kind == "sq":
        make = lambda: b.op("Mul", w, w)
    elif kind == "ones":
        make = lambda: b.op("ConstantOfShape", b.op("Shape", w), value=ir.tensor(np.ones(1, b.dtype.numpy())))
    else:  # ("gamma", γ, "pos" | "neg"): W + γ·W^±
        _, gamma, part = key
        make = lambda: b.op("Add", w, b.scale(_transform(b, w, (part,)), gamma))
    return b.cached((w, key), make)


def _modified_input(b: Builder, layer: LinearLayer, kind: str, rule: Rule):
    x = layer.x
    if kind == "x":
        return x
    if kind == "pos":
        return x if is_nonnegative(x) else b.cached((x, "pos"), lambda: b.op("Relu", x))
    if kind == "neg":
        return _VANISHES if is_nonnegative(x) else b.cached((x, "neg"), lambda: b.op("Min", x, b.const(0.0)))
    if kind in ("low", "high") and layer.input_affine is not None:  # zbox bounds given in raw input units
        scale, shift = layer.input_affine
        low, high = rule.low * scale + shift, rule.high * scale + shift
        bound = np.minimum(low, high) if kind == "low" else np.maximum(low, high)
        return b.const(np.broadcast_to(bound, [1, *x.shape[1:]]))
    fill = {"ones": 1.0, "low": rule.low, "high": rule.high}[kind]
    return b.cached((x, kind, fill), lambda: _per_sample_constant(b, x, fill))


def _per_sample_constant(b: Builder, x: ir.Value, fill: float) -> ir.Value:
    """A tensor of x's shape filled with `fill`: [1, ...] when the non-batch dims are static."""
    value = ir.tensor(np.full(1, fill, b.dtype.numpy()))
    dims = list(x.shape) if x.shape is not None else None
    if dims and all(isinstance(d, int) for d in dims[1:]):
        shape = b.const(np.array([1, *dims[1:]], np.int64), dtype=np.int64)
    else:
        shape = b.op("Shape", x)
    return b.op("ConstantOfShape", shape, value=value)


def _signed(b: Builder, sign: float, v: ir.Value) -> ir.Value:
    return v if sign > 0 else b.op("Neg", v)


def _basis(key: tuple, on_x: bool) -> dict:
    """A weight transform as a combination of W and W⁺ where that is exact and well conditioned: γ's
    W + γW⁺ and W + γW⁻ = (1 + γ)W − γW⁺ on the layer's own x, whose W x comes free from the forward z
    (z_γ⁺ = z + γW⁺x adds like-signed parts; so does z_γ⁻ on the outputs z < 0 it is used for). W⁻x is
    not rewritten as Wx − W⁺x: for α-β that difference cancels when |W⁻x| ≪ |W⁺x| (measured: 2.3e-5 from
    the float64 oracle on a test network that the direct W⁻x keeps within 1e-5)."""
    if on_x and key[0] == "gamma":
        _, gamma, part = key
        return {ID: 1.0, POS: gamma} if part == "pos" else {ID: 1.0 + gamma, POS: -gamma}
    return {key: 1.0}


def _accumulate(into: dict, key, value: float) -> None:
    into[key] = into.get(key, 0.0) + value


def _shared_product(b: Builder, layer: LinearLayer, m: ir.Value, basis: tuple, scale: float) -> ir.Value:
    """scale·(B m + B b), built once for all groups (γ's z_γ⁺ = z + γ(W⁺x + b⁺), z_γ⁻ = (1+γ)z − γ(W⁺x + b⁺))."""

    def make():
        w = b.cached((layer.weight, basis, scale), lambda: b.scale(_transform(b, layer.weight, basis), scale))
        bias = (
            None
            if layer.bias is None
            else b.cached((layer.bias, basis, scale), lambda: b.scale(_transform(b, layer.bias, basis), scale))
        )
        return layer.apply(b, m, w, bias)

    return b.cached(("product", m, layer.weight, basis, scale), make)


def _group_z(b: Builder, layer: LinearLayer, group, terms) -> ir.Value:
    """z_g = Σ_(m, B) c·B m + Σ σ·g(b). Where each bias transform mirrors its weight's (γ, zᴮ) and the
    group uses W x, that part is the forward z itself and every other product carries its own bias."""
    products = {}
    for t, m in terms:
        for basis, c in _basis(t.weight, m is layer.x).items():
            _accumulate(products, (m, basis), t.sign * c)
    products = {k: c for k, c in products.items() if c != 0.0}
    from_z = products.get((layer.x, ID), 0.0)
    mirrored = all(t.bias == t.weight for t, _ in terms) and not any(
        t.bias for t in group.terms if t not in dict(terms)
    )
    if from_z and (mirrored or layer.bias is None):  # every product carries its own bias: c·(B x + B b)
        del products[(layer.x, ID)]
        total = b.scale(layer.z, from_z)
        for (m, basis), c in products.items():
            total = b.op("Add" if c > 0 else "Sub", total, _shared_product(b, layer, m, basis, abs(c)))
        return total
    biases = [
        _signed(b, t.sign, _transform(b, layer.bias, t.bias)) for t in group.terms if layer.bias is not None and t.bias
    ]
    bias = b.add_all(biases) if biases else None
    parts = []
    for i, ((m, basis), c) in enumerate(products.items()):  # the first product adds the bias (as bias / c)
        carried = b.scale(bias, 1.0 / c) if i == 0 and bias is not None else None
        parts.append(b.scale(layer.apply(b, m, _transform(b, layer.weight, basis), carried), c))
    return b.add_all(parts)


_SIGNS = {"pos": 1, "neg": -1, "ones": 1, POS: 1, NEG: -1, SQ: 1, ONES: 1}


def _nonnegative_z(layer: LinearLayer, group, terms, z: ir.Value) -> bool:
    """Whether z_g ≥ 0 by construction: the ReLU output standing in for z, or every product σ·m(x)·f(W)
    and every bias transform of the group non-negative (α-β's z⁺ = W⁺x⁺ + W⁻x⁻ + b⁺). Then stab(z_g) =
    z_g + ε exactly (sign₀(0) = +1)."""
    if z is layer.z:
        return layer.relevant_where_positive
    input_sign = lambda t: 1 if t.input == "x" and is_nonnegative(layer.x) else _SIGNS.get(t.input)
    products = [t.sign * (input_sign(t) or 0) * _SIGNS.get(t.weight, 0) > 0 for t, _ in terms]
    biases = [_SIGNS.get(t.bias, 0) > 0 for t in group.terms if t.bias is not None and layer.bias is not None]
    return all(products) and all(biases)


def _gated_quotient(b: Builder, r: ir.Value, z: ir.Value, gate: str, eps: float) -> ir.Value:
    """R / stab(z_g) on the units the gate keeps, finite elsewhere (the gate's 0 must not meet inf). On kept
    units z_g has the gate's sign (γ: |z_γ| ≥ |z| > 0), so stab(z_g) = max(z_g, 0) + ε there (min(z_g, 0) − ε
    for the negative gate) — no sign test, and a Cast + Mul selects: onnxruntime's Where with a tensor
    operand takes 3× as long (103 ms against 31 ms on 64×224×224)."""
    if eps == 0.0:
        return b.divide(r, z, 0.0)
    clipped = b.op("Max" if gate == "pos" else "Min", z, b.const(0.0))
    return b.op("Div", r, b.op("Add", clipped, b.const(eps if gate == "pos" else -eps)))


def lower_linear(layer: LinearLayer, r: ir.Value, rule: Rule, b: Builder) -> ir.Value:
    """R_in of one linear layer under `rule` (the formula in lrp.py's docstring). Each group's s_g is
    gathered per (input, weight basis) first, so each distinct product needs one transposed pass:

        R_in = Σ_(m, B) m ⊙ Bᵀ (Σ_g c_g Σ_(i: mᵢ = m) σᵢ·coef(fᵢ, B)·s_g)"""
    adjoint, ones = {}, set()  # (m, basis) → {s_g: coefficient}; the inputs that are the constant 1
    for group in rule.groups:
        if group.gate == "neg" and layer.relevant_where_positive:
            continue  # no relevance on z < 0 (sparsity.py)
        terms = [(t, m) for t in group.terms if (m := _modified_input(b, layer, t.input, rule)) is not _VANISHES]
        if not terms:
            continue
        if [t for t, _ in terms] == [Term(1, "x", ID, ID)] and all(t.bias == ID for t in group.terms):
            z = layer.z
        else:
            z = _group_z(b, layer, group, terms)
        if group.gate and layer.relevant_where_positive:  # R is already 0 where z ≤ 0: no mask (sparsity.py)
            s = _gated_quotient(b, r, z, group.gate, rule.eps)
        elif group.gate and (shared := cofactor(r, layer.z)) is not None:  # R = z ⊙ c: R·[z ≷ 0] = c ⊙ z^±
            part = b.op("Relu", layer.z) if group.gate == "pos" else b.op("Min", layer.z, b.const(0.0))
            s = _gated_quotient(b, b.op("Mul", shared, part), z, group.gate, rule.eps)
        elif group.gate:
            keep = b.op("Cast", b.op("Greater" if group.gate == "pos" else "Less", layer.z, b.const(0.0)), to=b.dtype)
            s = b.op("Mul", _gated_quotient(b, r, z, group.gate, rule.eps), keep)
        elif rule.eps > 0 and _nonnegative_z(layer, group, terms, z):
            s = b.op("Div", r, b.op("Add", z, b.const(rule.eps)))  # stab(z) = z + ε, no sign test
        else:
            s = b.divide(r, z, rule.eps)
        for t, m in terms:
            if t.input == "ones":
                ones.add(m)
            _accumulate(adjoint.setdefault((m, t.weight), {}), s, group.coef * t.sign)
    by_input = {}
    for (m, basis), weights in adjoint.items():
        scaled = [b.scale(s, c) for s, c in weights.items() if c != 0.0]
        if scaled:
            w = _transform(b, layer.weight, basis)
            by_input.setdefault(m, []).append(layer.apply_t(b, b.add_all(scaled), w))
    parts = []
    for m, contributions in by_input.items():
        back = b.add_all(contributions)
        parts.append(back if m in ones else b.op("Mul", m, back))
    return layer.unwrap(b, b.add_all(parts))


@relevance_rule(*LAYERS)
def linear(node, rel_out, b, cfg):
    if node.meta.get(KIND) == "product":  # q·kᵀ, A·v: a product of two activations
        return bilinear(node, rel_out, b, cfg)
    layer = LAYERS[node.op_type](node, b)
    layer.input_affine = node.meta.get(INPUT_AFFINE)
    rel_in = [None] * len(node.inputs)
    layer, rule = squares_in_range(node, layer, cfg.rule_for(node), b)  # w²'s W² within the float range
    relu = stand_in(b, cfg.relu_stand_ins, layer.z)
    if relu is not None:  # the rule reads max(z, 0) for z: z dies at the ReLU (sparsity.py)
        layer = replace(layer, z=relu, relevant_where_positive=True)
    rel_in[layer.x_index] = lower_linear(layer, rel_out[0], rule, b)
    return rel_in
