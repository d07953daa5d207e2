"""A float64 oracle for DAG-shaped networks, independent of lrpc and onnxruntime (numpy only).

Each tensor of one sample is a float64 array of its per-sample shape (batch axis dropped). An op
maps its activation inputs to one output, and the relevance R at its output back to its inputs:

  linear       Conv / ConvTranspose / Gemm as explicit matrices (oracle.Linear), the rules of oracle.RULES
  combine      Add/Sub/Sum, signs σ (Sub: +1, −1), constants excluded:  z = Σ σᵢxᵢ,  s = R / stab(z),
               Rᵢ = sum_to(σᵢxᵢ ⊙ s, shapeᵢ); one activation (the rest constants, or Mul/Div by one):
               R_x = sum_to(R, shape_x). sum_to adds the broadcast copies of each element (bincount).
               Except x ± c with c a nonzero per-channel shift: a diagonal linear layer (W = diag(s), bias
               ±c; s of the per-channel or scalar Mul/Div producing x, else 1), as a BatchNorm with no
               linear neighbour is; not when x is the model input after constants only (a normalization).
  route        Concat, Split, Slice, Pad, Gather, Tile, Expand, Flatten: y = (x₁ ‖ … ‖ xₙ ‖ fill)[index],
               the index array made by numpy (concatenate, split, slicing, np.pad, take, tile) on position
               arrays; −1 marks a padded constant.  R_in = bincount(index, R).
  resize       y = A x, A_d [out_d, in_d] per axis from the ONNX formulas (coordinate transform, then
               nearest rounding / linear / cubic taps, indices clamped);  nearest: R_x = Aᵀ R,
               else R_x = x ⊙ Aᵀ(R / stab(y)).
  reduce       ReduceSum: R_x = x ⊙ R / stab(y) (broadcast);  ReduceMax, GlobalMaxPool: R to the first
               maximum (row-major over the reduced axes) of each slab, by a loop.
  relu         R passes.

stab(z) = z + ε·sign₀(z); ε is the rule's own: 0 for "zero" (0 where z = 0), the given eps for
"epsilon:eps=…", 1e-6 otherwise. The explained output y starts with R = onehot(argmax y)·y (or a
given class); relevance reaching a tensor from several consumers is summed.

`GraphNet` builds a network twice from the same float32 weights: ONNX nodes and oracle ops.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

import oracle


def rule_eps(spec: str) -> float:
    if spec == "zero":
        return 0.0
    return float(spec.split("=")[1]) if spec.startswith("epsilon:eps=") else oracle.EPS


def divide(R, z, eps):
    if eps == 0.0:
        return np.where(z != 0, R / np.where(z != 0, z, 1.0), 0.0)
    return R / oracle.stab(z, eps)


def sum_to(a, shape):
    """a summed over the copies broadcasting made of each element of an array of `shape`."""
    n = int(np.prod(shape, dtype=np.int64))
    source = np.broadcast_to(np.arange(n).reshape(shape), a.shape)
    return np.bincount(source.reshape(-1), weights=a.reshape(-1), minlength=n).reshape(shape)


def along(A, t, axis):
    """Apply the matrix A [m, n] along `axis` of t (whose size there is n)."""
    return np.moveaxis(np.tensordot(A, t, axes=([1], [axis])), 0, axis)


@dataclass
class LinearOp:
    inputs: list
    output: str
    L: oracle.Linear

    def forward(self, xs):
        return self.L.forward(xs[0].reshape(-1)).reshape(self.L.out_shape)

    def relevance(self, xs, y, R, spec):
        return [oracle.RULES[spec](self.L, xs[0].reshape(-1), R.reshape(-1)).reshape(xs[0].shape)]


@dataclass
class RouteOp:
    inputs: list
    output: str
    index: np.ndarray  # per output element: its position in the concatenated flat inputs, -1: `fill`
    fill: float = 0.0

    def forward(self, xs):
        return np.concatenate([x.reshape(-1) for x in xs] + [[self.fill]])[self.index]

    def relevance(self, xs, y, R, spec):
        keep = self.index >= 0
        total = np.bincount(self.index[keep], weights=R[keep], minlength=sum(x.size for x in xs))
        parts = np.split(total, np.cumsum([x.size for x in xs])[:-1])
        return [p.reshape(x.shape) for p, x in zip(parts, xs)]


@dataclass
class FnOp:
    inputs: list
    output: str
    fwd: Callable  # xs -> y
    back: Callable  # (xs, y, R, eps) -> [R_i]

    def forward(self, xs):
        return self.fwd(xs)

    def relevance(self, xs, y, R, spec):
        return self.back(xs, y, R, rule_eps(spec))


def _max_back(x, R, axes, keepdims):
    """R of each slab (the reduced axes at fixed kept indices) to the slab's first maximum."""
    Rk = R if keepdims else np.expand_dims(R, tuple(axes))
    kept = [a for a in range(x.ndim) if a not in axes]
    out = np.zeros_like(x)
    for k in itertools.product(*[range(x.shape[a]) for a in kept]):
        at = [slice(None)] * x.ndim
        for a, i in zip(kept, k):
            at[a] = i
        slab = x[tuple(at)]
        for a, i in zip(axes, np.unravel_index(np.argmax(slab), slab.shape)):
            at[a] = i
        out[tuple(at)] += Rk[tuple(0 if a in axes else at[a] for a in range(x.ndim))]
    return out


def conv_transpose_layer(
    w,
    bias,
    in_shape,
    strides=None,
    pads=None,
    output_padding=None,
    dilations=None,
    group=1,
    output_shape=None,
    auto_pad="NOTSET",
):
    """ConvTranspose weight w [C, M/group, *k] on a sample (C, *spatial) as W [n_out, n_in]: input (c, i)
    adds w[c, m_local, kk] to output (m, o), m = g·M/group + m_local for c in group g, and
    o = i·stride − pad_begin + kk·dilation. With output_shape or auto_pad SAME_* (output = in·stride):
    total = stride·(in−1) + output_padding + (k−1)·dilation + 1 − output; SAME_UPPER pads total//2 at the
    start, the others total − total//2; a negative total extends the end (onnxruntime's behaviour)."""
    w = np.asarray(w, np.float64)
    C, mpg, *kernel = w.shape
    _, *spatial = in_shape
    nd, M = len(kernel), mpg * group
    strides, dilations = list(strides or [1] * nd), list(dilations or [1] * nd)
    extra, pads = list(output_padding or [0] * nd), list(pads or [0] * 2 * nd)
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = output_shape or [spatial[a] * strides[a] for a in range(nd)]
        for a in range(nd):
            total = strides[a] * (spatial[a] - 1) + extra[a] + (kernel[a] - 1) * dilations[a] + 1 - target[a]
            first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            pads[a], pads[nd + a] = (first, total - first) if total >= 0 else (0, 0)
            extra[a] += max(-total, 0)
    out_spatial = [
        strides[a] * (spatial[a] - 1) + extra[a] + (kernel[a] - 1) * dilations[a] + 1 - pads[a] - pads[nd + a]
        for a in range(nd)
    ]
    out_shape = (M, *out_spatial)
    W = np.zeros((int(np.prod(out_shape)), int(np.prod(in_shape))))
    S = np.zeros_like(W)
    for c, i in itertools.product(range(C), itertools.product(*map(range, spatial))):
        col = np.ravel_multi_index((c, *i), in_shape)
        for m_local, kk in itertools.product(range(mpg), itertools.product(*map(range, kernel))):
            o = [i[a] * strides[a] - pads[a] + kk[a] * dilations[a] for a in range(nd)]
            if all(0 <= o[a] < out_spatial[a] for a in range(nd)):
                row = np.ravel_multi_index((c // (C // group) * mpg + m_local, *o), out_shape)
                W[row, col] += w[(c, m_local, *kk)]
                S[row, col] += 1.0
    b = np.zeros(M) if bias is None else np.asarray(bias, np.float64)
    return oracle.Linear(W, np.repeat(b, int(np.prod(out_spatial))), S, tuple(in_shape), out_shape)


def resize_matrix(n_in, n_out, scale, mode, coord, nearest_mode="round_prefer_floor", cubic_a=-0.75):
    """A [n_out, n_in] of one axis of ONNX Resize (exclude_outside = 0, no antialias)."""
    A = np.zeros((n_out, n_in))
    clamp = lambda i: min(max(int(i), 0), n_in - 1)
    for o in range(n_out):
        if coord == "align_corners":
            xo = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        elif coord == "asymmetric":
            xo = o / scale
        else:  # half_pixel, pytorch_half_pixel (n_out > 1)
            xo = (o + 0.5) / scale - 0.5
        if mode == "nearest":
            i = {
                "round_prefer_floor": math.ceil(xo - 0.5),
                "round_prefer_ceil": math.floor(xo + 0.5),
                "floor": math.floor(xo),
                "ceil": math.ceil(xo),
            }[nearest_mode]
            A[o, clamp(i)] = 1.0
        elif mode == "linear":
            xc = min(max(xo, 0.0), n_in - 1.0)
            i0 = math.floor(xc)
            A[o, clamp(i0)] += 1.0 - (xc - i0)
            A[o, clamp(i0 + 1)] += xc - i0
        else:  # cubic: Keys kernel with parameter a over the taps i0 − 1 … i0 + 2
            i0 = math.floor(xo)
            for tap in range(-1, 3):
                d, a = abs(xo - (i0 + tap)), cubic_a
                c = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
                A[o, clamp(i0 + tap)] += c
    return A


def _channel_only(c, rank) -> bool:
    """c (per-sample, batch axis dropped) is nonzero and varies along the channel axis only."""
    dims = (1,) * (rank - c.ndim) + c.shape
    return bool(np.any(c)) and [i for i, d in enumerate(dims) if d != 1] == [0]


class GraphNet:
    """Methods add one op and return its output name (Split: a list); `model(out)` is the ONNX model."""

    def __init__(self, input_shape, seed=0, use_bias=True, bias_std=0.2, opset=17):
        self.rng = np.random.default_rng(seed)
        self.use_bias, self.bias_std, self.opset = use_bias, bias_std, opset
        self.input_shape = tuple(input_shape)
        self.shapes, self.nodes, self.inits, self.ops = {"x": self.input_shape}, [], {}, []
        self.raw_input = {"x"}  # the input and what constants alone made of it
        self.scales, self.merged = {}, set()  # per-channel scales: output → (input, s); those a shift took

    def const(self, array):
        name = f"c{len(self.inits)}"
        self.inits[name] = np.asarray(array)
        return name

    def node(self, op_type, inputs, n_out=1, **attrs):
        name = f"{op_type.lower()}{len(self.nodes)}"
        outs = [name] if n_out == 1 else [f"{name}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def _add(self, op, shape):
        if any(v in self.merged for v in op.inputs):  # lrpc keeps a scale read twice out of the layer
            raise NotImplementedError(f"oracle_graph: {op.output} reads a scale merged into the shift after it")
        self.ops.append(op)
        self.shapes[op.output] = tuple(shape)
        return op.output

    def _iota(self, src):
        return np.arange(int(np.prod(self.shapes[src]))).reshape(self.shapes[src])

    def _route(self, srcs, out, index, fill=0.0):
        return self._add(RouteOp(list(srcs), out, np.asarray(index), fill), np.shape(index))

    def _weights(self, shape, fan_in, bias, n_out):
        w = (self.rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        use = self.use_bias if bias is None else bias
        return w, (self.rng.normal(0.0, self.bias_std, n_out).astype(np.float32) if use else None)

    def _linear(self, op_type, src, w, b, L, **attrs):
        inputs = [src, self.const(w)] + ([self.const(b)] if b is not None else [])
        return self._add(LinearOp([src], self.node(op_type, inputs, **attrs), L), L.out_shape)

    # linear layers ---------------------------------------------------------------------------
    def conv(self, src, out_ch, kernel, bias=None, group=1, transpose=False, **geo):
        """Conv, or ConvTranspose (weight [C, out_ch/group, *k]) with transpose=True; geo: ONNX attributes."""
        C, get = self.shapes[src][0], geo.get
        shape = (C, out_ch // group, *kernel) if transpose else (out_ch, C // group, *kernel)
        w, b = self._weights(shape, C // group * int(np.prod(kernel)), bias, out_ch)
        common = (w, b, self.shapes[src], get("strides"), get("pads"))
        L = (
            conv_transpose_layer(
                *common, get("output_padding"), get("dilations"), group, get("output_shape"), get("auto_pad", "NOTSET")
            )
            if transpose
            else oracle.conv_layer(*common, get("dilations"), group, get("auto_pad", "NOTSET"))
        )
        op_type = "ConvTranspose" if transpose else "Conv"
        return self._linear(op_type, src, w, b, L, kernel_shape=list(kernel), group=group, **geo)

    def conv_transpose(self, src, out_ch, kernel, **kw):
        return self.conv(src, out_ch, kernel, transpose=True, **kw)

    def gemm(self, src, n_out, bias=None):
        (k,) = self.shapes[src]
        w, b = self._weights((n_out, k), k, bias, n_out)
        return self._linear("Gemm", src, w, b, oracle.gemm_layer(w, b, trans_b=1), transB=1)

    # element-wise --------------------------------------------------------------------------------
    def relu(self, src):
        relu = FnOp([src], self.node("Relu", [src]), lambda xs: np.maximum(xs[0], 0), lambda xs, y, R, eps: [R])
        return self._add(relu, self.shapes[src])

    def flatten(self, src):
        return self._route([src], self.node("Flatten", [src], axis=1), self._iota(src).reshape(-1))

    def combine(self, op_type, *operands):
        """Add/Sub/Sum/Mul/Div of tensor names and constant arrays (full ONNX shape, batch axis 1 or absent)."""
        rank = len(self.shapes[next(s for s in operands if isinstance(s, str))])
        live = [i for i, s in enumerate(operands) if isinstance(s, str)]
        consts = {
            i: np.asarray(s, np.float64)[0] if np.ndim(s) > rank else np.asarray(s, np.float64)
            for i, s in enumerate(operands)
            if not isinstance(s, str)
        }
        names = [s if isinstance(s, str) else self.const(np.asarray(s, np.float32)) for s in operands]
        signs = [-1.0 if op_type == "Sub" and i == 1 else 1.0 for i in range(len(operands))]

        def fwd(xs):
            v = [dict(zip(live, xs)).get(i, consts.get(i)) for i in range(len(operands))]
            return {"Mul": lambda: v[0] * v[1], "Div": lambda: v[0] / v[1]}.get(
                op_type, lambda: sum(s * a for s, a in zip(signs, v))
            )()

        def back(xs, y, R, eps):
            if len(xs) == 1:
                return [sum_to(R, xs[0].shape)]
            terms = [signs[i] * x for i, x in zip(live, xs)]
            s = divide(R, sum(terms), eps)
            return [sum_to(t * s, x.shape) for t, x in zip(terms, xs)]

        shape = np.broadcast_shapes(
            *[self.shapes[s] if isinstance(s, str) else consts[i].shape for i, s in enumerate(operands)]
        )
        src, out = operands[live[0]], self.node(op_type, names)
        one_constant = live == [0] and len(operands) == 2 and shape == self.shapes[src]
        if len(live) == 1 and src in self.raw_input:  # the input ∘ constants (a normalization): R passes
            self.raw_input.add(out)
        elif (
            one_constant and op_type in ("Mul", "Div") and (_channel_only(consts[1], len(shape)) or consts[1].size == 1)
        ):
            s = consts[1] if op_type == "Mul" else 1 / consts[1]  # may start a layer with the shift after it
            self.scales[out] = (src, np.broadcast_to(s, shape).reshape(-1).copy())
        elif one_constant and op_type in ("Add", "Sub") and _channel_only(consts[1], len(shape)):
            t = np.broadcast_to(signs[1] * consts[1], shape).reshape(-1).copy()  # a layer diag(s), bias ±c
            a, s = (src, np.ones_like(t)) if src not in self.scales else self.scales.pop(src)
            self.merged |= {src} if a != src else set()
            return self._add(LinearOp([a], out, oracle.Linear(np.diag(s), t, np.eye(t.size), shape, shape)), shape)
        return self._add(FnOp([operands[i] for i in live], out, fwd, back), shape)

    # routing -------------------------------------------------------------------------------------
    def concat(self, srcs, axis):
        offsets = np.cumsum([0] + [int(np.prod(self.shapes[s])) for s in srcs])
        index = np.concatenate([o + self._iota(s) for o, s in zip(offsets, srcs)], axis=axis - 1)
        return self._route(srcs, self.node("Concat", list(srcs), axis=axis), index)

    def split(self, src, axis, sizes):
        outs = self.node("Split", [src, self.const(np.array(sizes, np.int64))], n_out=len(sizes), axis=axis)
        parts = np.split(self._iota(src), np.cumsum(sizes)[:-1], axis=axis - 1)
        return [self._route([src], out, part) for out, part in zip(outs, parts)]

    def slice(self, src, starts, ends, axes, steps):
        at = [slice(None)] * len(self.shapes[src])
        for s, e, a, st in zip(starts, ends, axes, steps):
            at[a - 1] = slice(s, e, st)
        ins = [src] + [self.const(np.array(v, np.int64)) for v in (starts, ends, axes, steps)]
        return self._route([src], self.node("Slice", ins), self._iota(src)[tuple(at)])

    def pad(self, src, begins, ends, mode="constant", value=0.0):
        """Pad the per-sample axes by (begins, ends); negative amounts crop (constant mode)."""
        index = self._iota(src)
        index = index[tuple(slice(-min(b, 0), n + min(e, 0)) for n, b, e in zip(index.shape, begins, ends))]
        width = [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends)]
        index = np.pad(index, width, constant_values=-1) if mode == "constant" else np.pad(index, width, mode=mode)
        ins = [src, self.const(np.array([0, *begins, 0, *ends], np.int64))]
        if mode == "constant":
            ins.append(self.const(np.array(value, np.float32)))
        return self._route([src], self.node("Pad", ins, mode=mode), index, fill=value)

    def gather(self, src, indices, axis):
        index = np.take(self._iota(src), np.asarray(indices), axis=axis - 1)
        return self._route([src], self.node("Gather", [src, self.const(np.array(indices, np.int64))], axis=axis), index)

    def tile(self, src, repeats):
        out = self.node("Tile", [src, self.const(np.array([1, *repeats], np.int64))])
        return self._route([src], out, np.tile(self._iota(src), repeats))

    def expand(self, src, shape):
        out = self.node("Expand", [src, self.const(np.array([1, *shape], np.int64))])
        return self._route([src], out, np.broadcast_to(self._iota(src), np.broadcast_shapes(self.shapes[src], shape)))

    # resampling and reductions -------------------------------------------------------------------
    def resize(
        self, src, mode, coord="half_pixel", scales=None, sizes=None, nearest_mode="round_prefer_floor", cubic_a=-0.75
    ):
        """Resize of the per-sample axes by `scales` (opset 17, all axes) or to `sizes` (opset 18, `axes`)."""
        shape = self.shapes[src]
        factors = [float(np.float32(s)) for s in scales] if scales else [n / i for n, i in zip(sizes, shape)]
        out_shape = [math.floor(i * f) for i, f in zip(shape, factors)] if scales else list(sizes)
        mats = {
            a: resize_matrix(i, n, f, mode, coord, nearest_mode, cubic_a)
            for a, (i, n, f) in enumerate(zip(shape, out_shape, factors))
            if f != 1.0
        }
        attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest_mode, cubic_coeff_a=cubic_a)
        if scales:
            out = self.node("Resize", [src, "", self.const(np.array([1, *scales], np.float32))], **attrs)
        else:
            ins = [src, "", "", self.const(np.array(sizes, np.int64))]
            out = self.node("Resize", ins, axes=list(range(1, len(shape) + 1)), **attrs)

        def apply(t, transpose=False):
            for a, A in mats.items():
                t = along(A.T if transpose else A, t, a)
            return t

        def back(xs, y, R, eps):
            return [apply(R, True) if mode == "nearest" else xs[0] * apply(divide(R, y, eps), True)]

        return self._add(FnOp([src], out, lambda xs: apply(xs[0]), back), out_shape)

    def reduce(self, op_type, src, axes, keepdims=1):
        """ReduceSum / ReduceMax over per-sample `axes` (+1 in ONNX), GlobalMaxPool (axes = spatial)."""
        axes = sorted(axes)
        if op_type == "GlobalMaxPool":
            out = self.node(op_type, [src])
        elif op_type == "ReduceSum":
            out = self.node(op_type, [src, self.const(np.array([a + 1 for a in axes], np.int64))], keepdims=keepdims)
        else:
            out = self.node(op_type, [src], axes=[a + 1 for a in axes], keepdims=keepdims)
        fn = np.sum if op_type == "ReduceSum" else np.max
        fwd = lambda xs: fn(xs[0], axis=tuple(axes), keepdims=bool(keepdims))

        def back(xs, y, R, eps):
            if op_type != "ReduceSum":
                return [_max_back(xs[0], R, axes, keepdims)]
            Rk, yk = (R, y) if keepdims else (np.expand_dims(R, tuple(axes)), np.expand_dims(y, tuple(axes)))
            return [xs[0] * divide(Rk, yk, eps)]

        return self._add(FnOp([src], out, fwd, back), np.shape(fwd([np.zeros(self.shapes[src])])))

    def model(self, out, dtype=np.float32) -> onnx.ModelProto:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        cast = lambda a: a.astype(dtype) if a.dtype == np.float32 else a
        graph = helper.make_graph(
            self.nodes,
            "graph_net",
            [helper.make_tensor_value_info("x", elem, ["batch", *self.input_shape])],
            [helper.make_tensor_value_info(out, elem, ["batch", *self.shapes[out]])],
            [numpy_helper.from_array(cast(a), n) for n, a in self.inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def explain_sample(ops, out, x, spec, target=None):
    """(y, R_x) of one sample; target None = argmax (first maximum) of y."""
    values = {"x": np.asarray(x, np.float64)}
    for op in ops:
        values[op.output] = op.forward([values[n] for n in op.inputs])
    y = values[out]
    t = int(np.argmax(y)) if target is None else int(target)
    rel = {out: np.where(np.arange(y.size) == t, y, 0.0)}
    for op in reversed(ops):
        if op.output in rel:
            R_in = op.relevance([values[n] for n in op.inputs], values[op.output], rel.pop(op.output), spec)
            for name, r in zip(op.inputs, R_in):
                rel[name] = rel[name] + r if name in rel else r
    return y, rel.get("x", np.zeros(np.shape(x)))


def _sensitivity(ops, out, x, spec, target, rel=1e-7, seed=0):
    """Relative change of R when weights and x get relative noise `rel` (see oracle.float32_sensitivity)."""
    rng = np.random.default_rng(seed)
    jitter = lambda a: a * (1.0 + rel * rng.standard_normal(np.shape(a)))
    noisy = [
        replace(op, L=oracle.Linear(jitter(op.L.W), jitter(op.L.b), op.L.S, op.L.in_shape, op.L.out_shape))
        if isinstance(op, LinearOp)
        else op
        for op in ops
    ]
    R = explain_sample(ops, out, x, spec, target)[1]
    R2 = explain_sample(noisy, out, jitter(np.asarray(x, np.float64)), spec, target)[1]
    den = np.linalg.norm(R)
    return np.linalg.norm(R2 - R) / den if den > 0 else float(np.linalg.norm(R2) > 0)


def pick_inputs(net: GraphNet, out, spec, batch, seed=11, target=None):
    """`batch` inputs on which float32 can be held to 1e-5 of float64 (oracle.pick_inputs, for graphs)."""
    chosen, k = [], 0
    while len(chosen) < batch:
        assert k < 50, "no well-conditioned inputs found"
        for c in oracle.sample_inputs(spec, (4 * batch, *net.input_shape), seed + 1000 * k):
            y = explain_sample(net.ops, out, c, spec, target)[0]
            if (
                len(chosen) < batch
                and oracle.well_conditioned(y, target)[0]
                and _sensitivity(net.ops, out, c, spec, target) <= oracle.SENSITIVITY_LIMIT
            ):
                chosen.append(c)
        k += 1
    return np.stack(chosen)


def check(net: GraphNet, out, X, spec, compiled=None, target=None, tol=1e-5, dtype=np.float32):
    """Compile (unless given), run in onnxruntime, compare output and relevance with the oracle.
    Returns (relevance from lrpc, oracle relevance, oracle outputs)."""
    import lrpc

    compiled = compiled or lrpc.compile(net.model(out, dtype), rule=spec, target=target)
    sess = oracle.session(compiled)
    got = oracle.run(sess, X, target, dtype)
    pairs = [
        explain_sample(net.ops, out, x, spec, target if target is None or np.isscalar(target) else target[n])
        for n, x in enumerate(np.asarray(X, np.float64))
    ]
    y, R = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    oracle.assert_rel_close(got[out], y, min(tol, 1e-5), what="model output (the oracle's forward pass)")
    assert np.all(oracle.well_conditioned(y, target)), "ill-conditioned explained output: use pick_inputs"
    assert got["relevance"].shape == np.shape(X)
    oracle.assert_rel_close(got["relevance"], R, tol)
    return got["relevance"], R, y


class Cases:
    """Networks by name — name → (input shape, build(net) → explained output[, opset]) — with each built
    net, compiled model and set of picked inputs cached for the tests of one file."""

    def __init__(self, builders: dict, seed: int = 3):
        self.builders, self.seed = builders, seed

    @functools.lru_cache(maxsize=None)
    def net(self, name, bias=True):
        shape, build, *opset = self.builders[name]
        net = GraphNet(shape, seed=self.seed, use_bias=bias, opset=opset[0] if opset else 17)
        return net, build(net)

    @functools.lru_cache(maxsize=None)
    def compiled(self, name, rule, bias=True, target=None):
        import lrpc

        net, out = self.net(name, bias)
        return lrpc.compile(net.model(out), rule=rule, target=target)

    @functools.lru_cache(maxsize=None)
    def inputs(self, name, rule, batch, bias=True, seed=11, target=None):
        return pick_inputs(*self.net(name, bias), rule, batch, seed, target)

    def check(self, name, rule, batch=3, bias=True, tol=1e-5):
        return check(
            *self.net(name, bias), self.inputs(name, rule, batch, bias), rule, self.compiled(name, rule, bias), tol=tol
        )

    def check_batch(self, name, rule, batch=4):
        """One run on `batch` samples equals `batch` runs on one sample each."""
        sess = oracle.session(self.compiled(name, rule))
        X = self.inputs(name, rule, batch)
        together = oracle.run(sess, X)["relevance"]
        for n in range(batch):
            oracle.assert_rel_close(together[n : n + 1], oracle.run(sess, X[n : n + 1])["relevance"], 1e-6)
