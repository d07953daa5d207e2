"""`GraphNet` builds a DAG-shaped network twice from the same float32 weights: ONNX nodes, and oracle
ops (ops.py) that know each layer by construction; `Cases` caches nets, compiled models and picked
inputs by name for the tests of one file.

Add/Sub/Sum of activations split relevance by their terms (ops.sum_back); one activation with
constants passes it (summed over broadcast copies). Except x ± c with c a nonzero per-channel shift:
a diagonal linear layer (W = diag(s), bias ±c; s of the per-channel or scalar Mul/Div producing x,
else 1), as a BatchNorm with no linear neighbour is; not when x is the model input after constants
only (a normalization: relevance passes).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import onnx
from onnx import helper

from . import dag
from .check import assert_rel_close, compare, run, session
from .layers import conv_layer, conv_transpose_layer, diagonal, gemm_layer
from .net import onnx_model
from .ops import FnOp, LinearOp, RouteOp, passthrough, reduce_max_op, reduce_sum_op, resize_op, sum_back


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

    def dag(self, out) -> dag.DagNet:
        """The oracle's network explaining `out`."""
        return dag.DagNet(self.ops, "x", self.input_shape, self.shapes, [out])

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
            raise NotImplementedError(f"GraphNet: {op.output} reads a scale merged into the shift after it")
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
        pad = get("auto_pad", "NOTSET")
        L = (
            conv_transpose_layer(*common, get("output_padding"), get("dilations"), group, get("output_shape"), pad)
            if transpose
            else conv_layer(*common, get("dilations"), group, pad)
        )
        op_type = "ConvTranspose" if transpose else "Conv"
        return self._linear(op_type, src, w, b, L, kernel_shape=list(kernel), group=group, **geo)

    def conv_transpose(self, src, out_ch, kernel, **kw):
        return self.conv(src, out_ch, kernel, transpose=True, **kw)

    def gemm(self, src, n_out, bias=None):
        (k,) = self.shapes[src]
        w, b = self._weights((n_out, k), k, bias, n_out)
        return self._linear("Gemm", src, w, b, gemm_layer(w, b, trans_b=1), transB=1)

    # element-wise --------------------------------------------------------------------------------
    def relu(self, src):
        return self._add(passthrough(src, self.node("Relu", [src]), lambda x: np.maximum(x, 0)), self.shapes[src])

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
            return self._add(LinearOp([a], out, diagonal(s, t, shape)), shape)
        back = sum_back([signs[i] for i in live])
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
        attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest_mode, cubic_coeff_a=cubic_a)
        if scales:
            out = self.node("Resize", [src, "", self.const(np.array([1, *scales], np.float32))], **attrs)
        else:
            ins = [src, "", "", self.const(np.array(sizes, np.int64))]
            out = self.node("Resize", ins, axes=list(range(1, len(shape) + 1)), **attrs)
        op = resize_op(src, out, shape, out_shape, factors, mode, coord, nearest_mode, cubic_a)
        return self._add(op, out_shape)

    def reduce(self, op_type, src, axes, keepdims=1):
        """ReduceSum / ReduceMax over per-sample `axes` (+1 in ONNX), GlobalMaxPool (axes = spatial)."""
        axes = sorted(axes)
        if op_type == "GlobalMaxPool":
            out = self.node(op_type, [src])
        elif op_type == "ReduceSum":
            out = self.node(op_type, [src, self.const(np.array([a + 1 for a in axes], np.int64))], keepdims=keepdims)
        else:
            out = self.node(op_type, [src], axes=[a + 1 for a in axes], keepdims=keepdims)
        op = (reduce_sum_op if op_type == "ReduceSum" else reduce_max_op)(src, out, axes, keepdims)
        return self._add(op, np.shape(op.forward([np.zeros(self.shapes[src])])))

    def model(self, out, dtype=np.float32) -> onnx.ModelProto:
        return onnx_model(
            self.nodes, self.inits, self.input_shape, out, self.shapes[out], dtype, "graph_net", self.opset
        )


def pick_inputs(net: GraphNet, out, spec, batch, seed=11, target=None):
    """dag.pick_inputs on the net explaining `out`."""
    return dag.pick_inputs(net.dag(out), spec, None, batch, target, seed)


def check(net: GraphNet, out, X, spec, compiled=None, target=None, tol=1e-5, dtype=np.float32):
    """Compile (unless given), run in onnxruntime, compare output and relevance with the oracle.
    Returns (relevance from lrpc, oracle relevance, oracle outputs)."""
    import lrpc

    compiled = compiled or lrpc.compile(net.model(out, dtype), rule=spec, target=target)
    return compare(run(session(compiled), X, target, dtype), out, net.dag(out), X, spec, target, tol)


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
        sess = session(self.compiled(name, rule))
        X = self.inputs(name, rule, batch)
        together = run(sess, X)["relevance"]
        for n in range(batch):
            assert_rel_close(together[n : n + 1], run(sess, X[n : n + 1])["relevance"], 1e-6)
