"""The oracle's view of an ONNX model (chains, torch.onnx and tf2onnx/Keras exports of DAGs), canonized
at the matrix level without lrpc code: `read_model(model)` walks the nodes in order and builds the ops
of ops.py from the float32 weights, one per ONNX value, keeping the value names. Each op type has a
handler in HANDLERS (as the compiler's op tables).

- Conv, ConvTranspose, Gemm, MatMul by a constant → LinearOp on layers.py's explicit matrices.
- BatchNormalization and a constant Add/Sub/Mul/Div are elementwise affine maps a ↦ s⊙a + t (BN:
  s = γ/√(var+ε), t = β − μ s). Right after a Linear that has no other reader (or after an order-keeping
  reshape of it: Conv1D's Squeeze) one is composed into it: W' = diag(s) W, b' = s⊙b + t. Otherwise it
  waits (consecutive ones compose) for its one reader: a Linear reading no padding, directly or through
  a Transpose, takes it in: W' = W diag(s), b' = b + W t (docs/design.md §2.2). Anywhere else a BatchNormalization,
  or a nonzero per-channel shift (with the scale before it), is a diagonal Linear of its own (W = diag(s),
  bias t); the rest, and an affine map of the model input (a normalization), pass relevance unchanged.
- AveragePool → a depthwise Linear 1/K and a scale K/n(o) that passes relevance; GlobalAveragePool and a
  spatial ReduceMean (channels first or last) → a depthwise Linear 1/K.
- Relu, Selu, Tanh, LeakyRelu, Elu, Sigmoid, Clip, ... pass relevance; Add/Sub/Sum of activations split
  it by their terms (ops.sum_op); MaxPool, GlobalMaxPool and ReduceMax give it to each window's first
  maximum; Resize by layers.resize_matrix; Concat, Flatten/Reshape/Squeeze/Unsqueeze, Transpose,
  Identity/Dropout route it (RouteOp).
- Shape and what only constants and shapes feed are not activations: a Reshape to such a shape takes
  its output shape from ONNX shape inference.
- A Softmax/LogSoftmax/Sigmoid at a graph output is kept for the forward pass and stripped for the
  explanation (dag.explained).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .check import softmax
from .dag import DagNet
from .layers import (
    avgpool_layer,
    compose_after,
    compose_before,
    conv_layer,
    conv_transpose_layer,
    diagonal,
    gemm_layer,
    matmul_layer,
    maxpool_windows,
    mean_layer,
    reads_padding,
)
from .shapes import axes_of, fold_constant, reshaped, spatial_axes
from .ops import FnOp, LinearOp, RouteOp, maxpool_op, passthrough, reduce_max_op, resize_op, sum_op

OUTPUT_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875
ACTIVATIONS = {  # float64 forward of each activation whose relevance passes unchanged
    "Relu": lambda x, a: np.maximum(x, 0.0),
    "LeakyRelu": lambda x, a: np.where(x >= 0, x, a.get("alpha", 0.01) * x),
    "Elu": lambda x, a: np.where(x > 0, x, a.get("alpha", 1.0) * np.expm1(np.minimum(x, 0))),
    "Selu": lambda x, a: (
        a.get("gamma", SELU_GAMMA) * np.where(x > 0, x, a.get("alpha", SELU_ALPHA) * np.expm1(np.minimum(x, 0)))
    ),
    "Tanh": lambda x, a: np.tanh(x),
    "Sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "Softplus": lambda x, a: np.logaddexp(x, 0.0),
}
AFFINE = ("Add", "Sub", "Mul", "Div")
TAKES_PENDING = (
    "Conv",
    "Gemm",
    "MatMul",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Transpose",
    "BatchNormalization",
    *AFFINE,
)


@dataclass
class Pending:
    """An elementwise affine map a ↦ s⊙a + t of value `source` (flat per sample), not placed yet."""

    source: str
    s: np.ndarray
    t: np.ndarray
    layer: bool  # a BatchNormalization or a per-channel shift is part of it: a layer if it stays alone
    raw: bool  # source is the model input through constants only


def attributes(node):
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def affine_of(op_type, c, shape):
    """(s, t) per element of a sample of `shape` for `a ∘ c` (c broadcast with a leading batch axis)."""
    c = np.asarray(c, np.float64)
    c = c[0] if c.ndim == len(shape) + 1 else c
    c = np.broadcast_to(c, shape).reshape(-1)
    one, zero = np.ones_like(c), np.zeros_like(c)
    return {"Mul": (c, zero), "Div": (1 / c, zero), "Add": (one, c), "Sub": (one, -c)}[op_type]


class Reader:
    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.model, self.consts = model, {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        x = next(v for v in graph.input if v.name not in self.consts)
        shape = tuple(d.dim_value for d in x.type.tensor_type.shape.dim[1:])
        self.net = DagNet([], x.name, shape, {x.name: shape}, [o.name for o in graph.output])
        self.raw_input, self.pending, self.shape_values, self._inferred = {x.name}, {}, set(), None
        self.uses = {}
        for v in [v for node in graph.node for v in node.input] + [o.name for o in graph.output]:
            self.uses[v] = self.uses.get(v, 0) + 1

    def add(self, op, shape):
        self.net.ops.append(op)
        self.net.shapes[op.output] = tuple(shape)

    def iota(self, name):
        return np.arange(int(np.prod(self.net.shapes[name]))).reshape(self.net.shapes[name])

    def route(self, srcs, out, index):
        self.add(RouteOp(list(srcs), out, np.asarray(index)), np.shape(index))

    def producer(self, name):
        return next((i for i, op in enumerate(self.net.ops) if op.output == name), None)

    def inferred(self, name):
        """The per-sample shape of value `name` by ONNX shape inference."""
        if self._inferred is None:
            info = {v.name: v for v in onnx.shape_inference.infer_shapes(self.model).graph.value_info}
            self._inferred = info | {v.name: v for v in self.model.graph.output}
        return tuple(d.dim_value for d in self._inferred[name].type.tensor_type.shape.dim[1:])

    def take(self, name, keep=True):
        """The pending map of `name` if its one reader may take it (keep), else None after placing it."""
        if name not in self.pending:
            return None
        if keep and self.uses.get(name) == 1:
            return self.pending.pop(name)
        self.place(name)
        return None

    def place(self, name):
        """A pending map left alone: a diagonal Linear (a BN, a shift) or an op relevance passes."""
        p = self.pending.pop(name)
        if p.layer == "bn" or (p.layer and not p.raw):
            self.add(LinearOp([p.source], name, diagonal(p.s, p.t, self.net.shapes[name])), self.net.shapes[name])
            return
        self.add(
            passthrough(p.source, name, lambda x, s=p.s, t=p.t: s.reshape(x.shape) * x + t.reshape(x.shape)),
            self.net.shapes[name],
        )
        self.raw_input |= {name} if p.raw else set()

    def compose_after(self, src, out, s, t) -> bool:
        """The map composed into the Linear producing `src` (its one reader), also through a reshape that
        keeps the element order (Conv1D's Squeeze: Conv → Squeeze → bias Add)."""
        prod = self.producer(src)
        op = self.net.ops[prod] if prod is not None and self.uses.get(src) == 1 else None
        if isinstance(op, RouteOp) and len(op.inputs) == 1 and self.uses.get(op.inputs[0]) == 1:
            inner = self.producer(op.inputs[0])
            if np.array_equal(op.index.reshape(-1), np.arange(op.index.size)) and inner is not None:
                lin = self.net.ops[inner]
                if isinstance(lin, LinearOp):
                    self.net.ops[inner] = LinearOp(lin.inputs, lin.output, compose_after(lin.L, s, t))
                    self.net.ops[prod] = RouteOp(op.inputs, out, op.index)
                    self.net.shapes[out] = self.net.shapes[src]
                    return True
        if not isinstance(op, LinearOp):
            return False
        self.net.ops[prod] = LinearOp(op.inputs, out, compose_after(op.L, s, t))
        self.net.shapes[out] = self.net.shapes[src]
        return True

    def affine(self, node, s, t, kind):
        """a ↦ s⊙a + t of node.input[0] (kind: "bn", True for a per-channel shift, else False)."""
        src, out = node.input[0], node.output[0]
        self.net.shapes[out] = self.net.shapes[src]
        if self.compose_after(src, out, s, t):
            return
        p = self.take(src)
        if p is None:
            self.pending[out] = Pending(src, s, t, kind, src in self.raw_input)
        else:
            self.pending[out] = Pending(
                p.source, s * p.s, s * p.t + t, "bn" if "bn" in (kind, p.layer) else kind or p.layer, p.raw
            )

    def linear(self, node, L, out=None):
        """A LinearOp reading node.input[0]; a pending map there is taken in unless L reads padding."""
        src = node.input[0]
        p = self.take(src, keep=not reads_padding(L))
        if p is not None:
            src, L = p.source, compose_before(L, p.s, p.t)
        self.add(LinearOp([src], out or node.output[0], L), L.out_shape)

    def channel_shift(self, node, c) -> bool:
        """`node` adds a nonzero constant that varies along the channel axis only."""
        if node.op_type not in ("Add", "Sub") or not np.any(c):
            return False
        dims = (1,) * (len(self.net.shapes[node.input[0]]) + 1 - c.ndim) + c.shape
        return [i for i, d in enumerate(dims) if d != 1] == [1]


# --------------------------------------------------------------------------------------------------
# One handler per op type: handler(reader, node, attributes, constant inputs (None: activation), shape)
# --------------------------------------------------------------------------------------------------


def _bias(c):
    return c[2] if len(c) > 2 else None


def _conv(r, node, a, c, shape):
    geo = (a.get("strides"), a.get("pads"))
    r.linear(
        node,
        conv_layer(c[1], _bias(c), shape, *geo, a.get("dilations"), a.get("group", 1), a.get("auto_pad", "NOTSET")),
    )


def _conv_transpose(r, node, a, c, shape):
    geo = (a.get("strides"), a.get("pads"), a.get("output_padding"), a.get("dilations"), a.get("group", 1))
    r.linear(
        node, conv_transpose_layer(c[1], _bias(c), shape, *geo, a.get("output_shape"), a.get("auto_pad", "NOTSET"))
    )


def _gemm(r, node, a, c, shape):
    assert len(shape) == 1 and not a.get("transA", 0), "Gemm on [batch, k] only"
    r.linear(node, gemm_layer(c[1], _bias(c), a.get("alpha", 1.0), a.get("beta", 1.0), a.get("transB", 0)))


def _matmul(r, node, a, c, shape):
    assert c[1] is not None and c[0] is None, f"MatMul {node.name}: by a constant only"
    r.linear(node, matmul_layer(c[1], None, shape[:-1]))


def _batchnorm(r, node, a, c, shape):
    g, beta, mu, var = (np.asarray(v, np.float64) for v in c[1:5])
    s = g / np.sqrt(var + np.float32(a.get("epsilon", 1e-5)))
    reps = int(np.prod(shape[1:]))
    r.affine(node, np.repeat(s, reps), np.repeat(beta - mu * s, reps), "bn")


def _arithmetic(r, node, a, c, shape):
    if all(v is None for v in c):
        r.add(
            sum_op(node.op_type, list(node.input), node.output[0]),
            np.broadcast_shapes(*[r.net.shapes[v] for v in node.input]),
        )
        return
    assert len(c) == 2 and c[1] is not None and node.op_type != "Sum", f"{node.op_type} {node.name}: constant first"
    r.affine(node, *affine_of(node.op_type, c[1], shape), r.channel_shift(node, c[1]))


def _activation(r, node, a, c, shape):
    src, out, op = node.input[0], node.output[0], node.op_type
    if op in OUTPUT_ACTIVATIONS and out in r.net.outputs:  # stripped: forward only
        assert op == "Sigmoid" or (a.get("axis", -1) in (1, -1) and len(shape) == 1)
        fn = {"Softmax": lambda y: softmax(y[None])[0], "LogSoftmax": lambda y: np.log(softmax(y[None])[0])}.get(
            op, lambda y: 1.0 / (1.0 + np.exp(-y))
        )
        r.add(FnOp([src], out, lambda xs: fn(xs[0]), _stripped_back), shape)
        r.net.stripped[out] = src
    elif op == "Clip":  # bounds as constant inputs (opset ≥ 11)
        bound = lambda i, default: default if len(c) <= i or c[i] is None else float(c[i])
        r.add(passthrough(src, out, lambda x, lo=bound(1, -np.inf), hi=bound(2, np.inf): np.clip(x, lo, hi)), shape)
    else:
        r.add(passthrough(src, out, lambda x, fn=ACTIVATIONS[op]: fn(x, a)), shape)
        if op in ("Selu", "Elu"):
            r.net.exp_minus_one[out] = -ACTIVATIONS[op](np.array(-np.inf), a)


def _stripped_back(xs, y, R, eps):
    raise AssertionError("relevance reached an output activation: it should have been stripped")


def _maxpool(r, node, a, c, shape):
    assert not a.get("ceil_mode", 0) and not a.get("storage_order", 0)
    windows, out_shape = maxpool_windows(shape, a["kernel_shape"], a.get("strides"), a.get("pads"), a.get("dilations"))
    r.add(maxpool_op(node.input[0], node.output[0], windows, out_shape), out_shape)


def _reduce_max(r, node, a, c, shape):
    """GlobalMaxPool (keeps 1-sized spatial axes) or ReduceMax over per-sample axes."""
    if node.op_type == "GlobalMaxPool":
        axes, keep = list(range(1, len(shape))), 1
    else:
        given = axes_of(a, c)
        assert given is not None and all(int(x) % (len(shape) + 1) > 0 for x in given), "ReduceMax over the batch"
        axes, keep = sorted(int(x) % (len(shape) + 1) - 1 for x in given), a.get("keepdims", 1)
    op = reduce_max_op(node.input[0], node.output[0], axes, keep)
    r.add(op, np.shape(op.forward([np.zeros(shape)])))


def _avgpool(r, node, a, c, shape):
    out, nd = node.output[0], len(a["kernel_shape"])
    geo = (a.get("strides", [1] * nd), a.get("pads", [0] * 2 * nd), a.get("count_include_pad", 0))
    L, factor = avgpool_layer(shape, a["kernel_shape"], *geo, r.inferred(out)[1:], a.get("dilations", [1] * nd))
    r.linear(node, L, out=out + "/depthwise")
    r.add(passthrough(out + "/depthwise", out, lambda x, m=factor: m.reshape(x.shape) * x), L.out_shape)


def _mean(r, node, a, c, shape):
    keep = node.op_type == "GlobalAveragePool" or a.get("keepdims", 1)
    if node.op_type == "GlobalAveragePool" or spatial_axes(a, c, shape):
        r.linear(node, mean_layer(shape, keep))
    elif spatial_axes(a, c, shape, channels_last=True):
        r.linear(node, mean_layer(shape, keep, channels_last=True))
    else:
        raise NotImplementedError(f"onnx_reader: ReduceMean over axes {axes_of(a, c)} ({node.name})")


def _resize(r, node, a, c, shape):
    """Resize by `scales` (input 2) or to `sizes` (input 3) of the per-sample axes."""
    if len(c) > 3 and c[3] is not None and c[3].size:
        out_shape = [int(n) for n in c[3][1:]]
        factors = [n / i for n, i in zip(out_shape, shape)]
    else:
        factors = [float(np.float32(f)) for f in c[2][1:]]
        out_shape = [int(np.floor(i * f)) for i, f in zip(shape, factors)]
    mode, coord = a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel")
    rounding = (a.get("nearest_mode", "round_prefer_floor"), a.get("cubic_coeff_a", -0.75))
    r.add(resize_op(node.input[0], node.output[0], shape, out_shape, factors, mode, coord, *rounding), out_shape)


def _concat(r, node, a, c, shape):
    axis = a["axis"] % (len(shape) + 1)
    assert axis > 0, "Concat along the batch axis"
    offsets = np.cumsum([0] + [int(np.prod(r.net.shapes[v])) for v in node.input])
    r.route(node.input, node.output[0], np.concatenate([o + r.iota(v) for o, v in zip(offsets, node.input)], axis - 1))


def _reshape(r, node, a, c, shape):
    src, out = node.input[0], node.output[0]
    r.route([src], out, r.iota(src).reshape(reshaped(r, node, a, c, shape)))


def _transpose(r, node, a, c, shape):
    """A Transpose routes; a pending map before it moves after it (its Linear reader may take it in)."""
    assert a["perm"][0] == 0, "Transpose moves the batch axis"
    src, out = node.input[0], node.output[0]
    p = r.take(src)
    moved = out + "/moved" if p is not None else out
    r.route([p.source if p else src], moved, r.iota(src).transpose([p - 1 for p in a["perm"][1:]]))
    r.raw_input |= {moved} if (p.source if p else src) in r.raw_input else set()
    if p is not None:
        index = r.net.ops[-1].index.reshape(-1)
        r.net.shapes[out] = r.net.shapes[moved]
        r.pending[out] = Pending(moved, p.s[index], p.t[index], p.layer, p.raw)


HANDLERS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batchnorm,
    **dict.fromkeys((*AFFINE, "Sum"), _arithmetic),
    **dict.fromkeys((*ACTIVATIONS, *OUTPUT_ACTIVATIONS, "Clip"), _activation),
    "MaxPool": _maxpool,
    "GlobalMaxPool": _reduce_max,
    "ReduceMax": _reduce_max,
    "AveragePool": _avgpool,
    "GlobalAveragePool": _mean,
    "ReduceMean": _mean,
    "Resize": _resize,
    "Concat": _concat,
    **dict.fromkeys(("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"), _reshape),
    "Transpose": _transpose,
}


def read_model(model: onnx.ModelProto) -> DagNet:
    """The oracle ops of `model` (opset ≤ 17 exports; each node's non-constant inputs are activations)."""
    r = Reader(model)
    for node in model.graph.node:
        a, op = attributes(node), node.op_type
        if op == "Constant":
            r.consts[node.output[0]] = numpy_helper.to_array(a["value"])
            continue
        if op == "Shape" or all(not v or v in r.consts or v in r.shape_values for v in node.input):
            value = fold_constant(r, node, a)  # computes a shape (or a constant), not an activation
            r.consts.update({node.output[0]: value} if value is not None else {})
            r.shape_values.update(node.output)
            continue
        if op not in HANDLERS:
            raise NotImplementedError(f"onnx_reader: {op} ({node.name})")
        for v in node.input[1 if op in TAKES_PENDING else 0 :]:
            r.take(v, keep=False)
        c = [r.consts.get(v) if v else None for v in node.input]
        HANDLERS[op](r, node, a, c, r.net.shapes.get(node.input[0]))
    for name in list(r.pending):
        r.place(name)
    return r.net
