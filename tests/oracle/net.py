"""Chain networks: `Net` builds one small network twice from the same float32 weights, as an ONNX
model (opset 17, IR 8) for lrpc/onnxruntime and as a list of layers on flattened vectors, each with
forward(x) and relevance(x, R, rule); `chain(layers)` is that list as a DagNet, so forward, explain,
pick_inputs and check_against_oracle here are the DAG driver's (dag.py) on a chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import dag
from .check import compare, run, session, softmax
from .layers import Linear, conv_layer, gemm_layer, matmul_layer, maxpool_windows
from .ops import FnOp, LinearOp


@dataclass
class Relu:
    def forward(self, x):
        return np.maximum(x, 0.0)

    def relevance(self, x, R, rule):
        return R


@dataclass
class Elementwise:
    """Another elementwise activation (LeakyRelu, Tanh, ...): relevance passes unchanged."""

    fn: object

    def forward(self, x):
        return self.fn(x)

    def relevance(self, x, R, rule):
        return R


@dataclass
class Identity:
    """Flatten / Reshape: flattened vectors do not change."""

    def forward(self, x):
        return x

    def relevance(self, x, R, rule):
        return R


@dataclass
class Permute:
    """A per-sample Transpose: output element o is input element index[o]; relevance goes back."""

    index: np.ndarray

    def forward(self, x):
        return x[self.index]

    def relevance(self, x, R, rule):
        R_in = np.zeros_like(R)
        R_in[self.index] = R
        return R_in


@dataclass
class MaxPool:
    """windows[o]: the flat input indices of output o's window (valid positions, row-major order); each
    output's relevance goes to its window's first maximum, summed over the windows an input wins."""

    windows: list
    in_size: int

    def forward(self, x):
        return np.array([x[w].max() for w in self.windows])

    def winners(self, x):
        return np.array([w[np.argmax(x[w])] for w in self.windows])

    def relevance(self, x, R, rule):
        R_in = np.zeros(self.in_size)
        np.add.at(R_in, self.winners(x), R)
        return R_in


def maxpool_layer(in_shape, kernel, strides=None, pads=None, dilations=None):
    windows, out_shape = maxpool_windows(in_shape, kernel, strides, pads, dilations)
    return MaxPool(windows, int(np.prod(in_shape))), out_shape


def _step(layer, src, out):
    if isinstance(layer, Linear):
        return LinearOp([src], out, layer)
    back = lambda xs, y, R, eps: [layer.relevance(xs[0].reshape(-1), R.reshape(-1), None)]
    return FnOp([src], out, lambda xs: layer.forward(xs[0].reshape(-1)), back)


def chain(layers, input_shape) -> dag.DagNet:
    """The layers as a DagNet: values a0 (the input), a1, ..., an (the logits)."""
    ops = [_step(layer, f"a{i}", f"a{i + 1}") for i, layer in enumerate(layers)]
    return dag.DagNet(ops, "a0", tuple(input_shape), {}, [f"a{len(layers)}"])


def forward(layers, x):
    """All activations [x, a1, ..., logits] of one sample, flattened."""
    values = dag.forward(chain(layers, np.shape(x)), x)
    return [values[f"a{i}"].reshape(-1) for i in range(len(layers) + 1)]


def explain(layers, X, rule, target=None):
    """(logits [N, classes], R [N, *sample shape]) of a batch; rule: a spec or a rule function; target
    None (argmax), a class or one class per sample."""
    y, R = dag.explain(chain(layers, np.shape(X)[1:]), X, rule, None, target)
    return y.reshape(len(y), -1), R


def pick_inputs(layers, rule_spec, shape, batch, seed, target=None):
    """dag.pick_inputs on the chain (target None, "min", a class or one class per sample)."""
    target = np.broadcast_to(target, (batch,)) if target is not None and not isinstance(target, str) else target
    return dag.pick_inputs(chain(layers, shape), rule_spec, None, batch, target, seed)


def check_against_oracle(model, layers, X, rule_spec, target=None, tol=1e-5, compiled=None):
    """Compile `model` with lrpc (unless `compiled` is given), run it on X and compare its outputs and
    relevance with the oracle (check.compare). Returns (relevance from lrpc, oracle relevance, logits)."""
    import lrpc

    if compiled is None:
        compiled = lrpc.compile(model, rule=rule_spec, target="input" if isinstance(target, np.ndarray) else target)
    sess = session(compiled)
    double = sess.get_inputs()[0].type == "tensor(double)"
    got = run(sess, X, target, np.float64 if double else np.float32)
    with_softmax = model.graph.node[-1].op_type == "Softmax"
    net = chain(layers, np.shape(X)[1:])
    return compare(got, sess.get_outputs()[0].name, net, X, rule_spec, target, tol, softmax if with_softmax else None)


@dataclass
class Net:
    """Append layers; `model()` gives the ONNX model, `layers` the oracle's view of the same net."""

    input_shape: tuple  # per sample
    seed: int = 0
    bias_std: float = 0.2
    use_bias: bool = True  # the default of each layer's `bias`
    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.shape = tuple(self.input_shape)
        self.cur = "x"
        self.count = 0

    def _next(self, op):
        self.count += 1
        return f"{op.lower()}{self.count}"

    def _he(self, shape, fan_in):
        return (self.rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)

    def _bias(self, shape):
        return self.rng.normal(0.0, self.bias_std, shape).astype(np.float32)

    def _node(self, op, inputs, **attrs):
        name = self._next(op)
        self.nodes.append(helper.make_node(op, [self.cur, *inputs], [name], name=name, **attrs))
        self.cur = name
        return name

    def _append(self, layer, shape=None):
        self.layers.append(layer)
        self.shape = self.shape if shape is None else tuple(shape)
        return self

    def _params(self, w, b):
        """Initializers w{i} (and b{i}) for the next node; their names."""
        i = self.count + 1
        self.inits[f"w{i}"] = w
        if b is not None:
            self.inits[f"b{i}"] = b
        return [f"w{i}"] + ([f"b{i}"] if b is not None else [])

    def conv(self, out_ch, kernel, *, bias=None, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET"):
        C, kernel = self.shape[0], list(kernel)
        w = self._he((out_ch, C // group, *kernel), C // group * int(np.prod(kernel)))
        b = self._bias(out_ch) if (self.use_bias if bias is None else bias) else None
        given = dict(strides=strides, dilations=dilations)
        given.update({"auto_pad": auto_pad} if auto_pad != "NOTSET" else {"pads": pads})
        attrs = {k: list(v) if k != "auto_pad" else v for k, v in given.items() if v is not None}
        layer = conv_layer(w, b, self.shape, strides, pads, dilations, group, auto_pad)
        self._node("Conv", self._params(w, b), kernel_shape=kernel, group=group, **attrs)
        return self._append(layer, layer.out_shape)

    def gemm(self, n_out, *, bias=None, trans_b=1, alpha=1.0, beta=1.0, bias_2d=False):
        assert len(self.shape) == 1, "Gemm takes [batch, k]; flatten first"
        k = self.shape[0]
        Wt = self._he((n_out, k), k)  # [n, k]
        B = Wt if trans_b else Wt.T.copy()
        C = self._bias((1, n_out) if bias_2d else (n_out,)) if (self.use_bias if bias is None else bias) else None
        attrs = {k: v for k, v in (("alpha", alpha), ("beta", beta)) if v != 1.0}
        self._node("Gemm", self._params(B, C), transB=trans_b, **attrs)
        layer = gemm_layer(B, C, alpha, beta, trans_b)
        return self._append(layer, layer.out_shape)

    def matmul(self, m, *, bias=None, bias_first=False):
        """MatMul by a constant [k, m], then (if bias) Add of a constant [m] (bias_first: Add(b, mm))."""
        *lead, k = self.shape
        M = self._he((k, m), k)
        i = self.count + 1
        self._node("MatMul", self._params(M, None))
        b = None
        if self.use_bias if bias is None else bias:
            b = self._bias(m)
            self.inits[f"b{i}"] = b
            name = self._next("Add")
            ins = [f"b{i}", self.cur] if bias_first else [self.cur, f"b{i}"]
            self.nodes.append(helper.make_node("Add", ins, [name], name=name))
            self.cur = name
        layer = matmul_layer(M, b, tuple(lead))
        return self._append(layer, layer.out_shape)

    def relu(self):
        self._node("Relu", [])
        return self._append(Relu())

    def maxpool(self, kernel, strides=None, pads=None):
        attrs = {k: list(v) for k, v in (("strides", strides), ("pads", pads)) if v is not None}
        self._node("MaxPool", [], kernel_shape=list(kernel), **attrs)
        return self._append(*maxpool_layer(self.shape, kernel, strides, pads))

    def activation(self, op, fn, **attrs):
        """An elementwise ONNX activation `op` whose float64 forward is `fn`."""
        self._node(op, [], **attrs)
        return self._append(Elementwise(fn))

    def transpose(self, perm):
        """Transpose of the per-sample axes by `perm` (the batch axis stays first)."""
        self._node("Transpose", [], perm=[0, *[p + 1 for p in perm]])
        index = np.arange(int(np.prod(self.shape))).reshape(self.shape).transpose(perm).reshape(-1)
        return self._append(Permute(index), [self.shape[p] for p in perm])

    def reshape(self, shape):
        """Reshape to [batch, *shape] (written with 0 for the batch axis; -1 allowed in `shape`)."""
        name = f"shape{self.count + 1}"
        self.inits[name] = np.array([0, *shape], np.int64)
        self._node("Reshape", [name])
        n = int(np.prod(self.shape))
        return self._append(Identity(), [n // -int(np.prod(shape)) if d == -1 else d for d in shape])

    def flatten(self):
        self._node("Flatten", [], axis=1)
        return self._append(Identity(), (int(np.prod(self.shape)),))

    def softmax(self):
        """An output Softmax: lrpc explains its input, so the oracle skips it."""
        self._node("Softmax", [], axis=1)
        return self

    def model(self, dtype=np.float32) -> onnx.ModelProto:
        """The ONNX model; dtype=np.float64 gives the same net in double (weights cast exactly)."""
        return onnx_model(self.nodes, self.inits, self.input_shape, self.cur, self.shape, dtype, "oracle_net", 17)


def onnx_model(nodes, inits, input_shape, out, out_shape, dtype, name, opset) -> onnx.ModelProto:
    """A checked model with input "x" [batch, *input_shape] and output `out`; float32 initializers cast
    to `dtype` (exactly, for float64)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    cast = lambda a: a.astype(dtype) if a.dtype == np.float32 else a
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", elem, ["batch", *input_shape])],
        [helper.make_tensor_value_info(out, elem, ["batch", *out_shape])],
        [numpy_helper.from_array(cast(a), n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
