"""The DAG oracle's view of a DAG-shaped ONNX model (torch.onnx exports of ResNets, U-Nets, autoencoders),
canonized at the matrix level, without lrpc code.

`dag_oracle(model)` walks the nodes in order and builds the ops of oracle_graph.py (LinearOp, RouteOp,
FnOp) from the float32 weights, one per ONNX value, keeping the ONNX value names:

- Conv, ConvTranspose, Gemm, MatMul by a constant → LinearOp on oracle's explicit matrices.
- BatchNormalization, and a per-element constant Add/Sub/Mul/Div, right after a Linear that has no
  other consumer (or after an order-keeping reshape of it: Conv1D's Squeeze) is composed into it
  (DESIGN §6): a ↦ s⊙a + t with s = γ/√(var+ε), t = β − μ s, W' = diag(s) W, b' = s⊙b + t.
  Elsewhere a BatchNormalization, or a nonzero shift along the channel axis (with the Mul/Div whose
  one reader it is), is a diagonal Linear of its own (W = diag(s), bias t); the rest, and the steps
  that read the model input through constants only, pass relevance unchanged.
- AveragePool → a depthwise Linear 1/K and a Scale K/n(o) that passes relevance (oracle_onnx._avgpool);
  GlobalAveragePool and a spatial ReduceMean (channels first or last) → a depthwise Linear with weights 1/K.
- Relu, Selu, Tanh, LeakyRelu, Elu, Sigmoid, ... → FnOp, relevance passes unchanged.
- Add/Sub/Sum of activations → FnOp, R_i = σ_i x_i ⊙ R / stab(Σ σ_j x_j) (oracle_graph's combine).
- MaxPool → oracle.maxpool_layer (first maximum wins); GlobalMaxPool and ReduceMax (Keras' global max
  pooling through tf2onnx) → R to each slab's first maximum (oracle_graph._max_back);
  Resize → oracle_graph.resize_matrix per axis.
- Concat, Flatten/Reshape/Squeeze/Unsqueeze, Transpose, Identity/Dropout → RouteOp (index arrays).
- A Softmax/LogSoftmax/Sigmoid at a graph output is kept for the forward pass and stripped for the
  explanation: `explained(net, name)` is its input.

`explain(net, X, spec, tensor, target)` explains any tensor: target None (each sample's largest unit),
a flat or multi-index (one-hot), "all" (R₀ = y) or a mask array [N, *units] (R₀ = mask ⊙ y).
`pick_inputs` draws inputs on which float32 can be held to 1e-5 of float64 (as oracle_graph.pick_inputs),
judged by `sensitivity`, which also simulates onnxruntime's imprecise float32 Selu/Elu near 0⁻.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import numpy_helper

import oracle
from oracle_graph import FnOp, LinearOp, RouteOp, _max_back, along, conv_transpose_layer, divide, resize_matrix, sum_to
from oracle_onnx import _affine_of, _attrs, _avgpool, _compose_after

OUTPUT_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
NOISE = 1e-7  # relative size of the float32 errors `sensitivity` simulates (oracle.float32_sensitivity's)
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


@dataclass
class DagNet:
    ops: list
    input_name: str
    input_shape: tuple
    shapes: dict  # per-sample shape of every value
    outputs: list  # graph output names
    stripped: dict = field(default_factory=dict)  # output-activation value → its input (the logits)
    exp_minus_one: dict = field(default_factory=dict)  # Selu/Elu output → its scale on x < 0 (see sensitivity)


def _stripped_back(xs, y, R, eps):
    raise AssertionError("relevance reached an output activation: it should have been stripped")


class _Builder:
    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        x = next(v for v in graph.input if v.name not in self.consts)
        shape = tuple(d.dim_value for d in x.type.tensor_type.shape.dim[1:])
        self.net = DagNet([], x.name, shape, {x.name: shape}, [o.name for o in graph.output])
        self.nodes, self.raw_input = list(graph.node), {x.name}  # values that are the input ∘ constants only
        self.uses = {}
        for node in graph.node:
            for v in node.input:
                self.uses[v] = self.uses.get(v, 0) + 1
        for o in graph.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1

    def add(self, op, shape):
        self.net.ops.append(op)
        self.net.shapes[op.output] = tuple(shape)

    def iota(self, name):
        return np.arange(int(np.prod(self.net.shapes[name]))).reshape(self.net.shapes[name])

    def route(self, srcs, out, index):
        self.add(RouteOp(list(srcs), out, np.asarray(index)), np.shape(index))

    def passthrough(self, src, out, fn, shape=None):
        self.add(FnOp([src], out, lambda xs: fn(xs[0]), lambda xs, y, R, eps: [R]), shape or self.net.shapes[src])

    def producer(self, name):
        return next((i for i, op in enumerate(self.net.ops) if op.output == name), None)

    def compose_into_linear(self, node, s, t):
        """The affine map a ↦ s⊙a + t (flat per sample) composed into the Linear producing node.input[0],
        also through a reshape that keeps the element order (Conv1D's Squeeze: Conv → Squeeze → bias Add)."""
        src = node.input[0]
        prod = self.producer(src)
        op = self.net.ops[prod] if prod is not None and self.uses.get(src) == 1 else None
        if (
            isinstance(op, RouteOp)
            and len(op.inputs) == 1
            and self.uses.get(op.inputs[0]) == 1
            and np.array_equal(op.index.reshape(-1), np.arange(op.index.size))
        ):
            inner = self.producer(op.inputs[0])
            if inner is not None and isinstance(self.net.ops[inner], LinearOp):
                lin = self.net.ops[inner]
                self.net.ops[inner] = LinearOp(lin.inputs, lin.output, _compose_after(lin.L, s, t))
                self.net.ops[prod] = RouteOp(op.inputs, node.output[0], op.index)
                self.net.shapes[node.output[0]] = self.net.shapes[src]
                return
        if isinstance(op, LinearOp):
            self.net.ops[prod] = LinearOp(op.inputs, node.output[0], _compose_after(op.L, s, t))
            self.net.shapes[node.output[0]] = self.net.shapes[src]
        elif node.op_type != "BatchNormalization" and (
            src in self.raw_input
            or not (self.channel_shift(node, src) or node.op_type in ("Mul", "Div") and self.shift_follows(node, src))
        ):
            self.raw_input |= {node.output[0]} if src in self.raw_input else set()
            self.passthrough(src, node.output[0], lambda x, s=s, t=t: s.reshape(x.shape) * x + t.reshape(x.shape))
        else:  # a layer of its own (a pre-activation BN): diagonal W = diag(s), bias t
            shape = self.net.shapes[src]
            self.linear(node, oracle.Linear(np.diag(s), t, np.diag(np.ones_like(s)), shape, shape))

    def channel_shift(self, node, src) -> bool:
        """`node` adds to a value shaped as `src` a nonzero constant that varies along the channel axis only."""
        c = self.consts.get(node.input[1]) if node.op_type in ("Add", "Sub") else None
        if c is None or not np.any(c):
            return False
        dims = (1,) * (len(self.net.shapes[src]) + 1 - c.ndim) + c.shape
        return [i for i, d in enumerate(dims) if d != 1] == [1]

    def shift_follows(self, node, src) -> bool:
        """`node`'s one reader is such a shift (the pair is one per-channel affine layer)."""
        readers = [n for n in self.nodes if node.output[0] in n.input]
        return len(readers) == 1 and self.uses.get(node.output[0]) == 1 and self.channel_shift(readers[0], src)

    def linear(self, node, L, src=None, out=None):
        self.add(LinearOp([src or node.input[0]], out or node.output[0], L), L.out_shape)


def dag_oracle(model: onnx.ModelProto) -> DagNet:
    """The oracle ops of `model` (opset ≤ 17 exports; each node's non-constant inputs are activations)."""
    b = _Builder(model)
    net, consts = b.net, b.consts
    for node in model.graph.node:
        a, op, out = _attrs(node), node.op_type, node.output[0] if node.output else None
        if op == "Constant":
            consts[out] = numpy_helper.to_array(a["value"])
            continue
        c = [consts.get(v) if v else None for v in node.input]
        src = node.input[0]
        shape = net.shapes.get(src)
        if op == "Conv":
            b.linear(
                node,
                oracle.conv_layer(
                    c[1],
                    c[2] if len(c) > 2 else None,
                    shape,
                    a.get("strides"),
                    a.get("pads"),
                    a.get("dilations"),
                    a.get("group", 1),
                    a.get("auto_pad", "NOTSET"),
                ),
            )
        elif op == "ConvTranspose":
            b.linear(
                node,
                conv_transpose_layer(
                    c[1],
                    c[2] if len(c) > 2 else None,
                    shape,
                    a.get("strides"),
                    a.get("pads"),
                    a.get("output_padding"),
                    a.get("dilations"),
                    a.get("group", 1),
                    a.get("output_shape"),
                    a.get("auto_pad", "NOTSET"),
                ),
            )
        elif op == "Gemm":
            assert len(shape) == 1 and not a.get("transA", 0), "Gemm on [batch, k] only"
            b.linear(
                node,
                oracle.gemm_layer(
                    c[1], c[2] if len(c) > 2 else None, a.get("alpha", 1.0), a.get("beta", 1.0), a.get("transB", 0)
                ),
            )
        elif op == "MatMul" and c[1] is not None and c[0] is None:
            b.linear(node, oracle.matmul_layer(c[1], None, shape[:-1]))
        elif op == "BatchNormalization":
            g, beta, mu, var = (np.asarray(v, np.float64) for v in c[1:5])
            s = g / np.sqrt(var + np.float32(a.get("epsilon", 1e-5)))
            reps = int(np.prod(shape[1:]))
            b.compose_into_linear(node, np.repeat(s, reps), np.repeat(beta - mu * s, reps))
        elif op in ("Add", "Sub", "Mul", "Div", "Sum") and any(v is not None for v in c):
            assert len(c) == 2 and c[1] is not None and op != "Sum", f"{op} {node.name}: constant first"
            b.compose_into_linear(node, *_affine_of(node, c[1], shape))
        elif op in ("Add", "Sub", "Sum"):
            b.add(_combine(op, list(node.input), out), np.broadcast_shapes(*[net.shapes[v] for v in node.input]))
        elif op in OUTPUT_ACTIVATIONS and out in net.outputs:  # stripped: forward only
            fwd = {"Softmax": oracle.softmax, "LogSoftmax": lambda y: np.log(oracle.softmax(y))}.get(op)
            assert op == "Sigmoid" or (a.get("axis", -1) in (1, -1) and len(shape) == 1)
            fn = (lambda y: 1.0 / (1.0 + np.exp(-y))) if op == "Sigmoid" else (lambda y, f=fwd: f(y[None])[0])
            b.add(FnOp([src], out, lambda xs, fn=fn: fn(xs[0]), _stripped_back), shape)
            net.stripped[out] = src
        elif op == "Clip":  # bounds as constant inputs (opset ≥ 11); relevance passes unchanged
            bound = lambda i, default: default if len(c) <= i or c[i] is None else float(c[i])
            b.passthrough(src, out, lambda x, lo=bound(1, -np.inf), hi=bound(2, np.inf): np.clip(x, lo, hi))
        elif op in ACTIVATIONS:
            b.passthrough(src, out, lambda x, fn=ACTIVATIONS[op], a=a: fn(x, a))
            if op in ("Selu", "Elu"):
                net.exp_minus_one[out] = -ACTIVATIONS[op](np.array(-np.inf), a)
        elif op == "MaxPool":
            assert not a.get("ceil_mode", 0) and not a.get("storage_order", 0)
            pool, out_shape = oracle.maxpool_layer(
                shape, a["kernel_shape"], a.get("strides"), a.get("pads"), a.get("dilations")
            )
            b.add(
                FnOp(
                    [src],
                    out,
                    lambda xs, p=pool, s=out_shape: p.forward(xs[0].reshape(-1)).reshape(s),
                    lambda xs, y, R, eps, p=pool: [
                        p.relevance(xs[0].reshape(-1), R.reshape(-1), None).reshape(xs[0].shape)
                    ],
                ),
                out_shape,
            )
        elif op == "GlobalMaxPool" or op == "ReduceMax":
            _reduce_max(b, node, a, c, shape)
        elif op == "AveragePool":
            out_spatial = _inferred_shape(model, out)[1:]
            nd = len(a["kernel_shape"])
            L, scale = _avgpool(
                shape,
                a["kernel_shape"],
                a.get("strides", [1] * nd),
                a.get("pads", [0] * 2 * nd),
                a.get("count_include_pad", 0),
                out_spatial,
                a.get("dilations", [1] * nd),
            )
            b.linear(node, L, out=out + "/depthwise")
            b.passthrough(out + "/depthwise", out, lambda x, m=scale.s: m.reshape(x.shape) * x)
        elif op == "GlobalAveragePool" or (op == "ReduceMean" and _spatial_axes(a, c, shape)):
            K = int(np.prod(shape[1:]))
            L = oracle.conv_layer(np.full([shape[0], 1, *shape[1:]], 1.0 / K), None, shape, group=shape[0])
            keep = op == "GlobalAveragePool" or a.get("keepdims", 1)
            b.linear(node, L if keep else replace(L, out_shape=(shape[0],)))
        elif op == "ReduceMean" and _spatial_axes(a, c, shape, channels_last=True):
            b.linear(node, _channels_last_mean(shape, a.get("keepdims", 1)))
        elif op == "Resize":
            _resize(b, node, a, c, shape)
        elif op == "Concat":
            axis = a["axis"] % (len(shape) + 1)
            assert axis > 0, "Concat along the batch axis"
            offsets = np.cumsum([0] + [int(np.prod(net.shapes[v])) for v in node.input])
            b.route(node.input, out, np.concatenate([o + b.iota(v) for o, v in zip(offsets, node.input)], axis - 1))
        elif op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"):
            b.route([src], out, b.iota(src).reshape(_reshaped(op, a, c, shape)))
        elif op == "Transpose":
            assert a["perm"][0] == 0, "Transpose moves the batch axis"
            b.route([src], out, b.iota(src).transpose([p - 1 for p in a["perm"][1:]]))
            b.raw_input |= {out} if src in b.raw_input else set()
        else:
            raise NotImplementedError(f"oracle_dag_onnx: {op} ({node.name})")
    return net


def _combine(op, inputs, out):
    signs = [-1.0 if op == "Sub" and i == 1 else 1.0 for i in range(len(inputs))]

    def back(xs, y, R, eps):
        terms = [s * x for s, x in zip(signs, xs)]
        s = divide(R, sum(terms), eps)
        return [sum_to(t * s, x.shape) for t, x in zip(terms, xs)]

    return FnOp(inputs, out, lambda xs: sum(s * x for s, x in zip(signs, xs)), back)


def _reduce_max(b, node, a, c, shape):
    """GlobalMaxPool (keeps 1-sized spatial axes) or ReduceMax over per-sample axes: R to the first maximum."""
    if node.op_type == "GlobalMaxPool":
        axes, keep = list(range(1, len(shape))), 1
    else:
        given = a.get("axes") if len(c) < 2 or c[1] is None else [int(v) for v in c[1]]
        assert given is not None and all(int(x) % (len(shape) + 1) > 0 for x in given), "ReduceMax over the batch"
        axes, keep = sorted(int(x) % (len(shape) + 1) - 1 for x in given), a.get("keepdims", 1)
    fwd = lambda xs: np.max(xs[0], axis=tuple(axes), keepdims=bool(keep))
    back = lambda xs, y, R, eps: [_max_back(xs[0], R, axes, keep)]
    b.add(FnOp([node.input[0]], node.output[0], fwd, back), np.shape(fwd([np.zeros(shape)])))


def _resize(b, node, a, c, shape):
    """Resize by `scales` (input 2) or to `sizes` (input 3) of the per-sample axes, as GraphNet.resize."""
    mode, coord = a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel")
    if len(c) > 3 and c[3] is not None and c[3].size:
        out_shape = [int(n) for n in c[3][1:]]
        factors = [n / i for n, i in zip(out_shape, shape)]
    else:
        factors = [float(np.float32(f)) for f in c[2][1:]]
        out_shape = [int(np.floor(i * f)) for i, f in zip(shape, factors)]
    mats = {
        ax: resize_matrix(
            i, n, f, mode, coord, a.get("nearest_mode", "round_prefer_floor"), a.get("cubic_coeff_a", -0.75)
        )
        for ax, (i, n, f) in enumerate(zip(shape, out_shape, factors))
        if f != 1.0
    }

    def apply(t, transpose=False):
        for ax, A in mats.items():
            t = along(A.T if transpose else A, t, ax)
        return t

    def back(xs, y, R, eps):
        return [apply(R, True) if mode == "nearest" else xs[0] * apply(divide(R, y, eps), True)]

    b.add(FnOp([node.input[0]], node.output[0], lambda xs: apply(xs[0]), back), out_shape)


def _reshaped(op, a, c, shape):
    """The per-sample output shape of a shape-only op on a sample of `shape` (batch axis 1 for numpy)."""
    probe = np.empty((1, *shape))
    if op == "Flatten":
        axis = a.get("axis", 1)
        assert axis == 1, "Flatten with axis ≠ 1"
        return (probe[0].size,)
    if op == "Reshape":
        target = [probe.shape[i] if d == 0 and not a.get("allowzero", 0) else int(d) for i, d in enumerate(c[1])]
        out = probe.reshape(target).shape
        assert out[0] == 1, "Reshape moves values across samples"
        return out[1:]
    axes = a.get("axes") if len(c) < 2 or c[1] is None else [int(v) for v in c[1]]
    if op == "Squeeze":
        return tuple(d for d in shape if d != 1) if axes is None else np.squeeze(probe, tuple(axes)).shape[1:]
    if op == "Unsqueeze":
        return np.expand_dims(probe, tuple(axes)).shape[1:]
    return shape  # Identity, Dropout


def _spatial_axes(a, c, shape, channels_last=False) -> bool:
    """Whether a Reduce's axes are all the spatial axes: 2..rank-1 (NC…), or 1..rank-2 (N…C)."""
    axes = a.get("axes") if len(c) < 2 or c[1] is None else list(c[1])
    spatial = range(1, len(shape)) if channels_last else range(2, len(shape) + 1)
    return axes is not None and sorted(int(x) % (len(shape) + 1) for x in axes) == list(spatial)


def _channels_last_mean(shape, keepdims):
    """The mean over the positions of each channel of a channels-last sample [*spatial, C], as a Linear
    with its explicit matrix: W[c, (p, c)] = 1/K (depthwise, so no rule mixes channels)."""
    C, K = shape[-1], int(np.prod(shape[:-1]))
    W = np.kron(np.full((1, K), 1.0 / K), np.eye(C))  # columns in (position, channel) order
    out = (*[1] * (len(shape) - 1), C) if keepdims else (C,)
    return oracle.Linear(W, np.zeros(C), (W != 0).astype(float), tuple(shape), out)


def _inferred_shape(model, name):
    info = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    info.update({v.name: v for v in model.graph.output})
    return [d.dim_value for d in info[name].type.tensor_type.shape.dim[1:]]


# --------------------------------------------------------------------------------------------------
# Explaining any tensor of one sample, a batch; choosing well-conditioned inputs
# --------------------------------------------------------------------------------------------------


def explained(net: DagNet, name: str) -> str:
    """The value relevance starts at when `name` is explained (an output activation is stripped)."""
    return net.stripped.get(name, name)


def forward(net: DagNet, x, noise=None) -> dict:
    """Every value of one sample, by name; noise(op, inputs, output), if given, perturbs each output."""
    values = {net.input_name: np.asarray(x, np.float64)}
    for op in net.ops:
        xs = [values[n] for n in op.inputs]
        y = op.forward(xs)
        values[op.output] = y if noise is None else noise(op, xs, y)
    return values


def start_relevance(y, target):
    """R₀: onehot ⊙ y (target None: the first largest unit; an int: a flat index; a tuple: a
    multi-index), y (target "all"), or mask ⊙ y (target an array of y's shape)."""
    if isinstance(target, str) and target == "all":
        return y.copy()
    if isinstance(target, np.ndarray) and target.shape == y.shape:
        return target * y
    t = _flat(y, target)
    return np.where(np.arange(y.size) == t, y.reshape(-1), 0.0).reshape(y.shape)


def _flat(y, target) -> int:
    """The flat index of a one-hot target (None: the first largest unit)."""
    if target is None:
        return int(np.argmax(y))
    return int(np.ravel_multi_index(target, y.shape)) if isinstance(target, tuple) else int(target)


def layer_specs(net: DagNet, spec: str):
    """ "RULE" or "RULE;first=RULE1" (the first linear layer takes RULE1) → (default, {op output: rule})."""
    default, _, first = spec.partition(";first=")
    linear = [op.output for op in net.ops if isinstance(op, LinearOp)]
    return default, ({linear[0]: first} if first else {})


def explain_sample(net: DagNet, x, spec, tensor, target=None, noise=None):
    """(values of all tensors, R at the input) for one sample; relevance starts at `tensor`. spec: a
    rule of oracle.RULES for every layer, or "RULE;first=RULE1" (lrpc's rule_map ["first=RULE1"])."""
    values = forward(net, x, noise)
    start = explained(net, tensor)
    default, specs = layer_specs(net, spec)
    rel = {start: start_relevance(values[start], target)}
    for op in reversed(net.ops):
        if op.output in rel:
            R_in = op.relevance(
                [values[n] for n in op.inputs], values[op.output], rel.pop(op.output), specs.get(op.output, default)
            )
            for name, r in zip(op.inputs, R_in):
                rel[name] = rel[name] + r if name in rel else r
    return values, rel.get(net.input_name, np.zeros(np.shape(x)))


def per_sample(target, n):
    """The target of sample n: a mask array [N, *units] gives its row, any other target is shared."""
    return target[n] if isinstance(target, np.ndarray) and target.dtype.kind == "f" else target


def explain(net: DagNet, X, spec, tensor, target=None):
    """(values of `tensor` [N, ...], R [N, *input]); target as in start_relevance, a mask as [N, *units]."""
    X = np.asarray(X, np.float64)
    pairs = [explain_sample(net, x, spec, tensor, per_sample(target, n)) for n, x in enumerate(X)]
    return np.stack([p[0][explained(net, tensor)] for p in pairs]), np.stack([p[1] for p in pairs])


def sensitivity(net: DagNet, x, spec, tensor, target, rel=NOISE, seed=0):
    """Relative change of R under float32-sized errors: weights, biases and x × (1 + rel·ξ) (as
    oracle.float32_sensitivity), and Selu/Elu outputs on x < 0 shifted by rel·γα·ξ: onnxruntime computes
    them as exp(x) − 1 in float32, which loses 1e-3 of the value at x = −1e-5 (2e-4 at −1e-4), and LRP
    divides that value by the preceding layer's own z. On the SELU autoencoder this alone moves R by
    ~1e-5 where the weight noise predicts 4e-7."""
    rng = np.random.default_rng(seed)
    jitter = lambda v: v * (1.0 + rel * rng.standard_normal(np.shape(v)))

    def noise(op, xs, y):
        scale = net.exp_minus_one.get(op.output)
        return y if scale is None else y + (xs[0] < 0) * rel * scale * rng.standard_normal(y.shape)

    noisy = replace(
        net,
        ops=[
            replace(op, L=oracle.Linear(jitter(op.L.W), jitter(op.L.b), op.L.S, op.L.in_shape, op.L.out_shape))
            if isinstance(op, LinearOp)
            else op
            for op in net.ops
        ],
    )
    R = explain_sample(net, x, spec, tensor, target)[1]
    R2 = explain_sample(noisy, jitter(np.asarray(x, np.float64)), spec, tensor, target, noise)[1]
    den = np.linalg.norm(R)
    return np.linalg.norm(R2 - R) / den if den > 0 else float(np.linalg.norm(R2) > 0)


def pick_inputs(net: DagNet, spec, tensor, batch, target=None, seed=11, limit=oracle.SENSITIVITY_LIMIT):
    """`batch` inputs (oracle.sample_inputs' distribution) whose explained unit is well conditioned in
    float32 (oracle.well_conditioned, for one-hot targets) and whose explanation moves by at most
    `limit` (oracle.SENSITIVITY_LIMIT, a tenth of the tests' 1e-5) under `sensitivity`. Inputs are
    uniform in the z-box bounds where a zbox rule is used. A mask target is [batch, *units]. Deterministic."""
    chosen, k = [], 0
    while len(chosen) < batch:
        assert k < 50, "no well-conditioned inputs found"
        for x in oracle.sample_inputs(
            "zbox" if "zbox" in spec else spec, (4 * batch, *net.input_shape), seed + 1000 * k
        ):
            if len(chosen) == batch:
                break
            t = per_sample(target, len(chosen))
            y = forward(net, x)[explained(net, tensor)]
            one_hot = not isinstance(t, (str, np.ndarray))
            if one_hot and not oracle.well_conditioned(y.reshape(1, -1), None if t is None else _flat(y, t))[0]:
                continue
            if sensitivity(net, x, spec, tensor, t) <= limit:
                chosen.append(x)
        k += 1
    return np.stack(chosen)
