"""Random valid CNN/MLP graphs for the fuzz tests, built with onnx.helper (opset 17, IR 8, dynamic batch).

`graphs()` is a hypothesis strategy giving a `Graph`: an ONNX model and what the tests need to know
about it. Its structure is drawn by hypothesis, its float32 weights from a numpy generator seeded by a
drawn seed, so every example is reproducible from its draws alone:

    x [N, C, *spatial] (1-D or 2-D)  or  x [N, F] (dense only)
    → blocks, each one of
        conv       Conv: kernel 1–3, strides 1–2, dilations 1–2, pads 0–2 per side (or auto_pad
                   SAME_UPPER/SAME_LOWER, undilated as onnxruntime requires, or VALID), group dividing
                   C and M, bias on/off; then ReLU or not
        maxpool    kernel 1–3, strides 1–2, dilations 1–2, pads < kernel
        avgpool    kernel 1–3, strides 1–2, pads < kernel, count_include_pad 0/1, ceil_mode 0/1
        residual   y = conv(x) [+ ReLU] + (x | 1×1 conv(x)), both of x's spatial shape, then ReLU or not
        concat     Concat(conv(x), x | maxpool 3/1/1 (x)) along channels
    → GlobalAveragePool or not → Flatten → (Gemm | MatMul + Add) [ReLU] … → Gemm to the logits [N, K]
    → Softmax or not (lrpc explains the logits either way).

A quarter of the graphs leave every node name empty, as hand-built and some exported models do.

Every pooling window holds at least one real input element (a window all in the padding would make
MaxPool −inf and a count_include_pad=0 average 0/0: an invalid model, not a fuzz case). Tensors stay
small (≤ ~400 values per sample) so that the dense float64 oracle of tests/oracle/
stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MAX_VALUES = 400  # per sample, for any tensor


@dataclass
class Graph:
    model: onnx.ModelProto
    input_shape: tuple  # per sample
    biased: bool  # whether any layer has a bias
    ops: frozenset  # the ONNX op types used
    seed: int


def _out_len(n, k, s, d, pb, pe, ceil=False):
    span = n + pb + pe - d * (k - 1) - 1
    return (-(-span // s) if ceil else span // s) + 1 if span >= 0 else 0


def _windows_hit_input(n, k, s, d, pb, out):
    """Whether every window o (taps o·s − pb + j·d) has a tap inside [0, n)."""
    return all(any(0 <= o * s - pb + j * d < n for j in range(k)) for o in range(out))


class Builder:
    """Appends nodes to a growing graph and tracks the current tensor's per-sample shape."""

    def __init__(self, seed, input_shape, allow_bias, named=True):
        self.rng = np.random.default_rng(seed)
        self.allow_bias, self.named = allow_bias, named
        self.biased = False
        self.nodes, self.inits, self.ops = [], {}, set()
        self.cur, self.shape = "x", tuple(input_shape)

    def name(self, op):
        return f"{op.lower()}{len(self.nodes) + 1}"

    def node(self, op, inputs, out_shape, **attrs):
        out = self.name(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out if self.named else "", **attrs))
        self.ops.add(op)
        self.cur, self.shape = out, tuple(out_shape)
        return out

    def init(self, prefix, array):
        name = f"{prefix}{len(self.inits) + 1}"
        self.inits[name] = np.asarray(array)
        return name

    def weight(self, shape, fan_in):
        return (self.rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)

    def bias(self, n, wanted):
        if not (wanted and self.allow_bias):
            return []
        self.biased = True
        return [self.init("b", self.rng.normal(0.0, 0.2, n).astype(np.float32))]

    def at(self, name, shape):
        self.cur, self.shape = name, tuple(shape)


@st.composite
def conv_geometry(draw, spatial, same=False):
    """Conv attributes and output spatial shape on `spatial`; same=True keeps the shape (odd kernel, stride 1)."""
    nd = len(spatial)
    if same:
        kernel = [draw(st.sampled_from([1, 3])) for _ in range(nd)]
        dil = [draw(st.integers(1, 2)) if k > 1 else 1 for k in kernel]
        pads = [(k - 1) * d // 2 for k, d in zip(kernel, dil)] * 2
        return dict(kernel_shape=kernel, dilations=dil, pads=pads), tuple(spatial)
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    strides = [draw(st.integers(1, 2)) for _ in range(nd)]
    dil = [draw(st.integers(1, 2)) for _ in range(nd)]
    auto_pad = draw(st.sampled_from(["NOTSET"] * 4 + ["SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = [draw(st.integers(0, 2)) for _ in range(2 * nd)] if auto_pad == "NOTSET" else [0] * 2 * nd
    if auto_pad.startswith("SAME"):
        dil = [1] * nd  # onnxruntime: "Dilation not supported for AutoPadType::SAME_UPPER or SAME_LOWER"
    for a, n in enumerate(spatial):  # shrink the kernel until the output is non-empty
        while kernel[a] > 1 and _out_len(n, kernel[a], strides[a], dil[a], pads[a], pads[nd + a]) < 1:
            kernel[a] -= 1
        if _out_len(n, kernel[a], strides[a], dil[a], pads[a], pads[nd + a]) < 1:
            dil[a] = 1
    attrs = dict(kernel_shape=kernel, strides=strides, dilations=dil)
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
        out = [_out_len(n, kernel[a], strides[a], dil[a], pads[a], pads[nd + a]) for a, n in enumerate(spatial)]
    else:
        attrs["auto_pad"] = auto_pad
        out = [
            -(-n // strides[a]) if auto_pad != "VALID" else _out_len(n, kernel[a], strides[a], dil[a], 0, 0)
            for a, n in enumerate(spatial)
        ]
    return attrs, tuple(out)


@st.composite
def conv(draw, g: Builder, same=False, out_ch=None, relu=None):
    C, *spatial = g.shape
    attrs, out_spatial = draw(conv_geometry(spatial, same))
    group = draw(st.sampled_from([d for d in range(1, C + 1) if C % d == 0 and (out_ch is None or out_ch % d == 0)]))
    M = out_ch if out_ch is not None else group * draw(st.integers(1, max(1, min(3, 6 // group))))
    w = g.weight((M, C // group, *attrs["kernel_shape"]), C // group * int(np.prod(attrs["kernel_shape"])))
    inputs = [g.cur, g.init("w", w), *g.bias(M, draw(st.booleans()))]
    g.node("Conv", inputs, (M, *out_spatial), group=group, **attrs)
    if relu if relu is not None else draw(st.booleans()):
        g.node("Relu", [g.cur], g.shape)


@st.composite
def pool_geometry(draw, spatial, dilated, ceil):
    nd = len(spatial)
    kernel = [draw(st.integers(1, min(3, n))) for n in spatial]
    strides = [draw(st.integers(1, 2)) for _ in range(nd)]
    dil = [draw(st.integers(1, 2)) if dilated else 1 for _ in range(nd)]
    pads = [draw(st.integers(0, k - 1)) for k in kernel + kernel]
    out = []
    for a, n in enumerate(spatial):
        k, s, d, pb, pe = kernel[a], strides[a], dil[a], pads[a], pads[nd + a]
        o = _out_len(n, k, s, d, pb, pe, ceil)
        if o < 1 or not _windows_hit_input(n, k, s, d, pb, o):  # fall back to an unpadded, undilated window
            kernel[a], dil[a], pads[a], pads[nd + a] = min(k, n), 1, 0, 0
            o = _out_len(n, kernel[a], s, 1, 0, 0, ceil)
        out.append(o)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads)
    if dilated:
        attrs["dilations"] = dil
    return attrs, tuple(out)


@st.composite
def maxpool(draw, g: Builder):
    C, *spatial = g.shape
    attrs, out = draw(pool_geometry(spatial, dilated=True, ceil=False))
    g.node("MaxPool", [g.cur], (C, *out), **attrs)


@st.composite
def avgpool(draw, g: Builder):
    C, *spatial = g.shape
    ceil = draw(st.booleans())
    attrs, out = draw(pool_geometry(spatial, dilated=False, ceil=ceil))
    g.node("AveragePool", [g.cur], (C, *out), ceil_mode=int(ceil), count_include_pad=draw(st.integers(0, 1)), **attrs)


@st.composite
def residual(draw, g: Builder):
    x, shape = g.cur, g.shape
    project = draw(st.booleans())
    M = draw(st.integers(1, 4)) if project else shape[0]
    draw(conv(g, same=True, out_ch=M))
    a = g.cur
    g.at(x, shape)
    if project:
        w = g.weight((M, shape[0], *[1] * (len(shape) - 1)), shape[0])
        g.node(
            "Conv",
            [x, g.init("w", w), *g.bias(M, draw(st.booleans()))],
            (M, *shape[1:]),
            kernel_shape=[1] * (len(shape) - 1),
        )
    g.node("Add", [a, g.cur], (M, *shape[1:]))
    if draw(st.booleans()):
        g.node("Relu", [g.cur], g.shape)


@st.composite
def concat(draw, g: Builder):
    x, shape = g.cur, g.shape
    draw(conv(g, same=True, out_ch=draw(st.integers(1, 3))))
    a, a_shape = g.cur, g.shape
    other = draw(st.sampled_from(["identity", "maxpool"]))
    b = x
    if other == "maxpool":
        nd = len(shape) - 1
        b = g.node("MaxPool", [x], shape, kernel_shape=[3] * nd, strides=[1] * nd, pads=[1] * 2 * nd)
    g.node("Concat", [a, b], (a_shape[0] + shape[0], *shape[1:]), axis=1)


BLOCKS = {"conv": conv, "maxpool": maxpool, "avgpool": avgpool, "residual": residual, "concat": concat}


@st.composite
def dense(draw, g: Builder, n_out, relu):
    k = g.shape[0]
    kind = draw(st.sampled_from(["gemm", "gemm_t", "matmul"]))
    w = g.weight((k, n_out), k)
    with_bias = draw(st.booleans())
    if kind == "matmul":
        g.node("MatMul", [g.cur, g.init("w", w)], (n_out,))
        bias = g.bias(n_out, with_bias)
        if bias:
            g.node("Add", [g.cur, *bias], (n_out,))
    else:
        B = w.T.copy() if kind == "gemm_t" else w
        g.node("Gemm", [g.cur, g.init("w", B), *g.bias(n_out, with_bias)], (n_out,), transB=int(kind == "gemm_t"))
    if relu:
        g.node("Relu", [g.cur], g.shape)


def _size(shape):
    return int(np.prod(shape))


@st.composite
def graphs(draw, bias=True, max_blocks=4):
    """A random valid model (see the module docstring); bias=False: no layer has a bias."""
    seed = draw(st.integers(0, 2**31 - 1))
    conv_net = draw(st.booleans()) or draw(st.booleans())
    if conv_net:
        nd = draw(st.sampled_from([1, 2, 2]))
        spatial = tuple(draw(st.integers(3, 12 if nd == 1 else 7)) for _ in range(nd))
        input_shape = (draw(st.integers(1, 3)), *spatial)
    else:
        input_shape = (draw(st.integers(2, 12)),)
    g = Builder(seed, input_shape, bias, named=draw(st.booleans()) or draw(st.booleans()))
    if conv_net:
        draw(conv(g))  # the first layer is a conv on the input (the composites' "first")
        for kind in draw(st.lists(st.sampled_from(sorted(BLOCKS)), max_size=max_blocks)):
            if _size(g.shape) > MAX_VALUES // 2:
                break
            draw(BLOCKS[kind](g))
        if draw(st.booleans()):
            g.node("GlobalAveragePool", [g.cur], (g.shape[0], *[1] * (len(g.shape) - 1)))
        g.node("Flatten", [g.cur], (_size(g.shape),), axis=1)
    for _ in range(draw(st.integers(0, 2))):
        draw(dense(g, draw(st.integers(2, 12)), relu=draw(st.booleans())))
    draw(dense(g, draw(st.integers(2, 5)), relu=False))
    if draw(st.booleans()):
        g.node("Softmax", [g.cur], g.shape, axis=1)
    return Graph(make_model(g, input_shape), input_shape, g.biased, frozenset(g.ops), seed)


def make_model(g: Builder, input_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        g.nodes,
        "fuzz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info(g.cur, TensorProto.FLOAT, ["batch", *g.shape])],
        [numpy_helper.from_array(a, n) for n, a in g.inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)  # the generator's own shapes agree with ONNX's
    return model
