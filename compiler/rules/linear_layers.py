"""The linear layers lrpc explains as affine maps z = W x + b: Conv and ConvTranspose (1D/2D/3D), Gemm,
MatMul by a constant. Each becomes a `LinearLayer` with two functions the rules (linear.py) combine:

    apply(x', W', b')  the op with modified operands,        apply_t(s, W')  the transposed map Wᵀ s

Conv's Wᵀ s is a Conv on the flipped, channel-swapped kernel at stride 1 — twice as fast in onnxruntime —
and ConvTranspose with the same weights and geometry otherwise, and where the Conv's input has fewer
than 16 channels (onnxruntime's blocked Conv pads so few output channels to its block; ConvTranspose
takes a third to a half of the time, benchmarks/PROFILE.md §10). ConvTranspose's Wᵀ s is a Conv with the
same weights and geometry (its weight [C_in, C_out/group, k…] is what a grouped Conv from C_out to C_in
channels takes); Gemm and MatMul multiply by the transposed weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx_ir as ir

from ..builder import Builder
from ..errors import LrpcError, node_label
from ..geometry import adjoint_conv_geometry, conv_transpose_geometry, output_padding, window_geometry
from ..passes.quantized import dequantized_constant

_FEW_CHANNELS = 16  # below this many input channels a Conv's transpose runs as ConvTranspose


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
