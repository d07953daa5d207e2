"""Relevance rules of linear layers: Conv and ConvTranspose (1D/2D/3D), Gemm and MatMul by a constant.

Each op is viewed as an affine map z = W x + b with two functions: `apply(x', W', b')` runs the op
with modified operands, and `apply_t(s, W')` applies the transposed map Wᵀ s — for a Conv a Conv on
the flipped, channel-swapped kernel at stride 1 (twice as fast in onnxruntime) and ConvTranspose with
the same weights and geometry otherwise, and where the Conv's input has fewer than 16 channels (the
relevance into an image's 3: onnxruntime's blocked Conv pads so few output channels to its block, and
ConvTranspose takes a third to a half of its time, benchmarks/PROFILE.md §10); for ConvTranspose a Conv
with the same weights and geometry (its weight [C_in, C_out/group, k…] is what a grouped Conv from C_out
to C_in channels takes); a
product with the transposed weight for Gemm/MatMul. The rule of the layer (lrp.py) combines them:

    z_g = Σᵢ σᵢ·apply(mᵢ(x), fᵢ(W), gᵢ(b)),   s_g = R / stab(z_g),   R_in = Σ_g c_g Σᵢ σᵢ·mᵢ(x) ⊙ apply_t(s_g, fᵢ(W))

computed with as few convolutions as the algebra allows: the forward z stands in for W x + b, γ's two
groups share one W⁺x, and each distinct (mᵢ, fᵢ) gets one transposed pass (lower_linear).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import onnx_ir as ir

from ..builder import Builder
from ..errors import LrpcError, node_label
from ..geometry import adjoint_conv_geometry, conv_transpose_geometry, output_padding, window_geometry
from ..passes.input_normalization import INPUT_AFFINE
from ..passes.quantized import dequantized_constant
from ..passes.recognize_products import KIND
from .attention import bilinear
from .lrp import ID, NEG, ONES, POS, SQ, Rule, Term
from .sparsity import stand_in
from .squares import squares_in_range
from .table import relevance_rule

_FEW_CHANNELS = 16  # below this many input channels a Conv's transpose runs as ConvTranspose
_VANISHES = object()  # an input modifier that is identically zero here (x⁻ of a non-negative x)


@dataclass
class LinearLayer:
    x: ir.Value  # the input the rule sees (Gemm with transA: the transposed A)
    weight: ir.Value
    bias: ir.Value | None
    z: ir.Value  # the forward output W x + b, reused where a rule needs exactly it
    apply: Callable[[Builder, ir.Value, ir.Value, ir.Value | None], ir.Value]
    apply_t: Callable[[Builder, ir.Value, ir.Value], ir.Value]
    x_index: int = 0
    unwrap: Callable[[Builder, ir.Value], ir.Value] = lambda b, r: r
    input_affine: tuple | None = None  # (S, T): x = raw·S + T (passes/input_normalization.py)
    relevant_where_positive: bool = False  # z is the ReLU output: R vanishes where z ≤ 0 (sparsity.py)
    spatial: int = 0  # the output's dims after the channel axis (a bias [C] broadcasts over them)


def _constant_input(node: ir.Node, index: int, what: str, b: Builder) -> ir.Value:
    """The constant operand; a quantized one, DequantizeLinear(q, s, zp), as its float value (q − zp)·s."""
    value = node.inputs[index] if index < len(node.inputs) else None
    dequantized = dequantized_constant(value)
    if dequantized is not None:
        return b.const(dequantized, dtype=dequantized.dtype)
    if value is None or value.const_value is None:
        raise LrpcError(
            f"{node_label(node)}: its {what} (input {index}) is not a constant; lrpc explains "
            "layers with fixed weights (a product of two activations has no LRP rule)"
        )
    return value


def _conv_geometry(node: ir.Node, x_shape, kernel: list[int]) -> dict:
    return dict(window_geometry(node, x_shape, kernel), group=node.attributes.get_int("group", 1))


def _conv(node: ir.Node, b: Builder) -> LinearLayer:
    weight = _constant_input(node, 1, "weight", b)
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    kernel = list(weight.const_value.shape)[2:]
    geo = _conv_geometry(node, node.inputs[0].shape, kernel)
    out_pad = output_padding(node, geo)

    def apply(b, x, w, bias_):
        return b.op("Conv", x, w, *([bias_] if bias_ is not None else []), **geo)

    few_channels = weight.const_value.shape[1] * geo["group"] < _FEW_CHANNELS
    adjoint = None if few_channels else adjoint_conv_geometry(geo, out_pad)
    if adjoint is not None:  # stride 1: Wᵀ s is a Conv with the flipped, channel-swapped kernel

        def apply_t(b, s, w):
            flipped = b.cached(
                ("adjoint", w), lambda: _adjoint_kernel(b, w, list(weight.const_value.shape), geo["group"])
            )
            return b.op("Conv", s, flipped, **adjoint)
    else:

        def apply_t(b, s, w):
            return b.op("ConvTranspose", s, w, output_padding=out_pad, **geo)

    return LinearLayer(node.inputs[0], weight, bias, node.outputs[0], apply, apply_t, spatial=len(kernel))


def _adjoint_kernel(b: Builder, w: ir.Value, shape: list[int], group: int) -> ir.Value:
    """flip(W)ᵀ: [C_out, C_in/g, k…] → [C_in, C_out/g, k…], each group's channel axes swapped and every
    spatial axis reversed (ops on the initializer, folded by onnxruntime at load)."""
    c_out, c_in_g, *k = shape
    spatial = len(k)
    rest = list(range(3, 3 + spatial))
    grouped = b.op("Reshape", w, b.const(np.array([group, c_out // group, c_in_g, *k], np.int64), dtype=np.int64))
    swapped = b.op("Transpose", grouped, perm=[0, 2, 1, *rest])
    kernel_t = b.op(
        "Reshape", swapped, b.const(np.array([c_in_g * group, c_out // group, *k], np.int64), dtype=np.int64)
    )
    axes = list(range(2, 2 + spatial))
    return b.op(
        "Slice",
        kernel_t,
        *(
            b.const(np.array(v, np.int64), dtype=np.int64)
            for v in ([-1] * spatial, [-(2**62)] * spatial, axes, [-1] * spatial)
        ),
    )


def _conv_transpose(node: ir.Node, b: Builder) -> LinearLayer:
    weight = _constant_input(node, 1, "weight", b)
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    geo, out_pad = conv_transpose_geometry(node, list(weight.const_value.shape)[2:])
    if any(p >= s for p, s in zip(out_pad, geo["strides"])):  # the adjoint Conv would yield extra positions
        raise LrpcError(
            f"{node_label(node)}: output_padding {out_pad} (with output_shape resolved) is not smaller "
            f"than the strides {geo['strides']}; onnxruntime rejects such a ConvTranspose too"
        )

    def apply(b, x, w, bias_):
        return b.op("ConvTranspose", x, w, *([bias_] if bias_ is not None else []), output_padding=out_pad, **geo)

    def apply_t(b, s, w):
        return b.op("Conv", s, w, **geo)

    return LinearLayer(node.inputs[0], weight, bias, node.outputs[0], apply, apply_t, spatial=len(geo["strides"]))


def _gemm(node: ir.Node, b: Builder) -> LinearLayer:
    a, weight = node.inputs[0], _constant_input(node, 1, "weight B", b)
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    alpha, beta = node.attributes.get_float("alpha", 1.0), node.attributes.get_float("beta", 1.0)
    trans_a, trans_b = node.attributes.get_int("transA", 0), node.attributes.get_int("transB", 0)
    if a.const_value is not None:
        raise LrpcError(f"{node_label(node)}: input A is a constant and B is not; lrpc explains x·W layers")
    if bias is not None and bias.shape is not None and len(bias.shape) == 2 and bias.shape[0] != 1:
        raise LrpcError(f"{node_label(node)}: a bias C of shape {bias.shape} (one per sample) is not a layer bias")
    x = b.op("Transpose", a, perm=[1, 0]) if trans_a else a
    w = b.cached(("alpha", weight), lambda: b.scale(weight, alpha))
    if bias is not None:
        bias = b.cached(("beta", bias), lambda: b.scale(bias, beta))

    def apply(b, x, w, bias_):
        return b.op("Gemm", x, w, *([bias_] if bias_ is not None else []), transB=trans_b)

    def apply_t(b, s, w):
        return b.op("Gemm", s, w, transB=1 - trans_b)

    unwrap = (lambda b, r: b.op("Transpose", r, perm=[1, 0])) if trans_a else (lambda b, r: r)
    return LinearLayer(x, w, bias, node.outputs[0], apply, apply_t, unwrap=unwrap)


def _matmul(node: ir.Node, b: Builder) -> LinearLayer:
    weight = _constant_input(node, 1, "weight", b)
    if len(weight.const_value.shape) != 2:
        raise LrpcError(
            f"{node_label(node)}: a MatMul weight of rank {len(weight.const_value.shape)}; "
            "lrpc explains x·W with a 2-D W"
        )

    def apply(b, x, w, bias_):
        return b.op("MatMul", x, w)

    def apply_t(b, s, w):
        return b.op("MatMul", s, b.cached(("T", w), lambda: b.op("Transpose", w, perm=[1, 0])))

    return LinearLayer(node.inputs[0], weight, None, node.outputs[0], apply, apply_t)


LAYERS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul}

_NONNEG_OPS = {"Relu", "Sigmoid", "Softmax", "Abs"}
# ops whose output values are all values of their first input (a max, a copy, a selection)
_ROUTING_OPS = {
    "MaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "GlobalMaxPool",
    "ReduceMax",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Expand",
    "Tile",
}


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
    return node.op_type in _ROUTING_OPS


def is_nonnegative(value: ir.Value) -> bool:
    """True when `value` can never be negative by construction (a ReLU output, pooled, routed, resized,
    or a Concat of such values)."""
    node = value.producer()
    while node is not None and _keeps_sign(node):
        node = node.inputs[0].producer()
    if node is not None and node.op_type == "Concat":
        return all(is_nonnegative(v) for v in node.inputs)
    return node is not None and node.op_type in _NONNEG_OPS


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
