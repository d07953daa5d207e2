"""An independent float64 reference for LRP ("the oracle"), written on explicit weight matrices.

Every tensor of one sample is flattened in row-major order (C, spatial...) to a vector, and every
linear layer (Gemm, MatMul [+ Add], Conv 1-D/2-D/3-D with strides, pads, dilations, groups) is
written as an explicit affine map on those vectors,

    z = W x + b,        W: [n_out, n_in],  b: [n_out]

built here by index loops, independently of lrpc and of onnxruntime. `S` (same shape as W) is the
layer's 0/1 connectivity structure: the explicit matrix the layer would have with all weights = 1.

Notation: stab(z) = z + eps*sign0(z), sign0(0) = +1;  a+ = max(a, 0), a- = min(a, 0) (for x, W, b).
A rule maps R_out [n_out] to R_in [n_in]:

  zero          s = R / z  (s = 0 where z == 0),  z = W x + b;        R_in = x * (W^T s)
  epsilon(eps)  s = R / stab(z),                  z = W x + b;        R_in = x * (W^T s)
  alphabeta     za = W+ x+ + W- x- + b+,  sa = R / stab(za)           (activator)
   (a - b = 1)  zi = W- x+ + W+ x- + b-,  si = R / stab(zi)           (inhibitor)
                R_in = a (x+ * W+^T sa + x- * W-^T sa) - b (x+ * W-^T si + x- * W+^T si)
  w2            z = (W*W) 1 + b*b,  s = R / stab(z);                  R_in = (W*W)^T s
  flat          z = S 1 (no bias),  s = R / stab(z);                  R_in = S^T s
  gamma(g)      z = W x + b;  Wg+ = W + g W+,  Wg- = W + g W-,  bg+ = b + g b+,  bg- = b + g b-
                zp = Wg+ x+ + Wg- x- + bg+,  sp = [z > 0] R / stab(zp)
                zn = Wg- x+ + Wg+ x- + bg-,  sn = [z < 0] R / stab(zn)
                R_in = x+ * Wg+^T sp + x- * Wg-^T sp + x+ * Wg-^T sn + x- * Wg+^T sn
  zbox(l, h)    z = W x - W+ l - W- h  (l, h: constant vectors),  s = R / stab(z)
                R_in = x * W^T s - l * W+^T s - h * W-^T s

Non-linear layers: ReLU and other elementwise activations pass relevance unchanged; MaxPool gives
each output's relevance to its window's winner (first maximum in row-major window order; with
overlapping windows an input collects the sum over the windows it wins); Flatten and Reshape are
the identity on flattened vectors, a Transpose sends each element's relevance back to its source.
The explained logits y start the backward pass with R = onehot(t) * y, t = argmax(y) (first
maximum) or a given class; an output Softmax is skipped (lrpc explains its input).

The rest of the file is test scaffolding: `pick_inputs` draws inputs on which float32 can be held to
1e-5 of float64; `Net` builds one small network twice from the same float32 weights, as an ONNX model
(opset 17, IR 8) for lrpc/onnxruntime and as a list of oracle layers; `check_against_oracle`
compiles, runs and compares.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import onnx
from onnx import helper, numpy_helper

EPS = 1e-6


# --------------------------------------------------------------------------------------------------
# Layers (per sample, flattened float64 vectors)
# --------------------------------------------------------------------------------------------------


@dataclass
class Linear:
    """z = W x + b on flattened per-sample vectors; S is the 0/1 connectivity structure of W."""

    W: np.ndarray
    b: np.ndarray
    S: np.ndarray
    in_shape: tuple
    out_shape: tuple

    def forward(self, x):
        return self.W @ x + self.b

    def relevance(self, x, R, rule):
        return rule(self, x, R)


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
    """windows[o]: the flat input indices of output o's window (valid positions, row-major order)."""

    windows: list
    in_size: int

    def forward(self, x):
        return np.array([x[w].max() for w in self.windows])

    def winners(self, x):
        return np.array([w[np.argmax(x[w])] for w in self.windows])  # argmax: first maximum

    def relevance(self, x, R, rule):
        R_in = np.zeros(self.in_size)
        np.add.at(R_in, self.winners(x), R)
        return R_in


@dataclass
class Identity:
    """Flatten / Reshape: flattened vectors do not change."""

    def forward(self, x):
        return x

    def relevance(self, x, R, rule):
        return R


# --------------------------------------------------------------------------------------------------
# Explicit matrices of the linear layers
# --------------------------------------------------------------------------------------------------


def gemm_layer(B, C, alpha=1.0, beta=1.0, trans_b=0):
    """Gemm y = alpha * x B' + beta * C (B' = B or B^T) as W = alpha B'^T, b = beta C."""
    B = np.asarray(B, np.float64)
    alpha, beta = float(np.float32(alpha)), float(np.float32(beta))  # ONNX stores them as float32
    Bp = B.T if trans_b else B  # [k, n]
    k, n = Bp.shape
    W = alpha * Bp.T
    b = np.zeros(n) if C is None else beta * np.broadcast_to(np.asarray(C, np.float64).reshape(-1), (n,))
    return Linear(W, np.array(b, np.float64), np.ones_like(W), (k,), (n,))


def matmul_layer(M, bias, lead=()):
    """x [*lead, k] @ M [k, m] (+ bias [m]): block diagonal W = kron(I_T, M^T), T = prod(lead)."""
    M = np.asarray(M, np.float64)
    k, m = M.shape
    T = int(np.prod(lead, dtype=np.int64))
    W = np.kron(np.eye(T), M.T)
    b = np.zeros(T * m) if bias is None else np.tile(np.asarray(bias, np.float64).reshape(-1), T)
    S = np.kron(np.eye(T), np.ones((m, k)))
    return Linear(W, b, S, (*lead, k), (*lead, m))


def same_pads(in_size, kernel, strides, dilations, mode):
    """Explicit pads [begins..., ends...] of auto_pad SAME_UPPER / SAME_LOWER (ONNX definition)."""
    begins, ends = [], []
    for i, k, s, d in zip(in_size, kernel, strides, dilations):
        out = -(-i // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - i)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends


def conv_layer(w, bias, in_shape, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET"):
    """Conv weight w [M, C/group, *k] on a sample of shape in_shape = (C, *spatial), as W [n_out, n_in].

    Row (m, o) and column (c, i) are connected by kernel tap kk when c is in m's group,
    c_local = c - group(m) * C/group, and i = o * stride - pad_begin + kk * dilation (per spatial axis)
    lies inside the input (taps landing in the padding have no column: padding is zero).
    """
    w = np.asarray(w, np.float64)
    M, cpg, *kernel = w.shape
    C, *spatial = in_shape
    nd = len(kernel)
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(spatial, kernel, strides, dilations, auto_pad)
    elif auto_pad == "VALID" or pads is None:
        pads = [0] * 2 * nd
    assert C == cpg * group and M % group == 0
    out_spatial = [
        (spatial[a] + pads[a] + pads[nd + a] - dilations[a] * (kernel[a] - 1) - 1) // strides[a] + 1 for a in range(nd)
    ]
    out_shape = (M, *out_spatial)
    W = np.zeros((int(np.prod(out_shape)), int(np.prod(in_shape))))
    S = np.zeros_like(W)
    mpg = M // group
    for m in range(M):
        g = m // mpg
        for o in itertools.product(*map(range, out_spatial)):
            row = np.ravel_multi_index((m, *o), out_shape)
            for c_local in range(cpg):
                c = g * cpg + c_local
                for kk in itertools.product(*map(range, kernel)):
                    i = [o[a] * strides[a] - pads[a] + kk[a] * dilations[a] for a in range(nd)]
                    if all(0 <= i[a] < spatial[a] for a in range(nd)):
                        col = np.ravel_multi_index((c, *i), in_shape)
                        W[row, col] += w[(m, c_local, *kk)]
                        S[row, col] += 1.0
    b = np.zeros(M) if bias is None else np.asarray(bias, np.float64)
    return Linear(W, np.repeat(b, int(np.prod(out_spatial))), S, tuple(in_shape), out_shape)


def maxpool_layer(in_shape, kernel, strides=None, pads=None, dilations=None):
    """MaxPool windows on a sample (C, *spatial); padded positions never win (they are -inf)."""
    C, *spatial = in_shape
    nd = len(kernel)
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = list(pads or [0] * 2 * nd)
    out_spatial = [
        (spatial[a] + pads[a] + pads[nd + a] - dilations[a] * (kernel[a] - 1) - 1) // strides[a] + 1 for a in range(nd)
    ]
    windows = []
    for c in range(C):
        for o in itertools.product(*map(range, out_spatial)):
            idx = []
            for kk in itertools.product(*map(range, kernel)):  # row-major window order
                i = [o[a] * strides[a] - pads[a] + kk[a] * dilations[a] for a in range(nd)]
                if all(0 <= i[a] < spatial[a] for a in range(nd)):
                    idx.append(np.ravel_multi_index((c, *i), in_shape))
            windows.append(np.array(idx))
    return MaxPool(windows, int(np.prod(in_shape))), (C, *out_spatial)


# --------------------------------------------------------------------------------------------------
# Rules: rule(layer, x, R_out) -> R_in, all vectors of one sample
# --------------------------------------------------------------------------------------------------


def pos(a):
    return np.maximum(a, 0.0)


def neg(a):
    return np.minimum(a, 0.0)


def stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def rule_zero(L, x, R):
    z = L.W @ x + L.b
    s = np.divide(R, z, out=np.zeros_like(z), where=z != 0)
    return x * (L.W.T @ s)


def rule_epsilon(L, x, R, eps=EPS):
    z = L.W @ x + L.b
    s = R / stab(z, eps)
    return x * (L.W.T @ s)


def rule_alphabeta(L, x, R, alpha, beta, eps=EPS):
    Wp, Wn, xp, xn = pos(L.W), neg(L.W), pos(x), neg(x)
    za = Wp @ xp + Wn @ xn + pos(L.b)
    zi = Wn @ xp + Wp @ xn + neg(L.b)
    sa, si = R / stab(za, eps), R / stab(zi, eps)
    activator = xp * (Wp.T @ sa) + xn * (Wn.T @ sa)
    inhibitor = xp * (Wn.T @ si) + xn * (Wp.T @ si)
    return alpha * activator - beta * inhibitor


def rule_w2(L, x, R, eps=EPS):
    W2 = L.W**2
    z = W2 @ np.ones_like(x) + L.b**2
    return W2.T @ (R / stab(z, eps))


def rule_flat(L, x, R, eps=EPS):
    z = L.S @ np.ones_like(x)
    return L.S.T @ (R / stab(z, eps))


def rule_gamma(L, x, R, gamma=0.25, eps=EPS):
    W, b, xp, xn = L.W, L.b, pos(x), neg(x)
    z = W @ x + b
    Wgp, Wgn = W + gamma * pos(W), W + gamma * neg(W)
    bgp, bgn = b + gamma * pos(b), b + gamma * neg(b)
    zp = Wgp @ xp + Wgn @ xn + bgp
    zn = Wgn @ xp + Wgp @ xn + bgn
    sp = (z > 0) * R / stab(zp, eps)
    sn = (z < 0) * R / stab(zn, eps)
    return xp * (Wgp.T @ sp) + xn * (Wgn.T @ sp) + xp * (Wgn.T @ sn) + xn * (Wgp.T @ sn)


def rule_zbox(L, x, R, low, high, eps=EPS):
    W, Wp, Wn = L.W, pos(L.W), neg(L.W)
    lo, hi = np.full_like(x, low), np.full_like(x, high)
    z = W @ x - Wp @ lo - Wn @ hi
    s = R / stab(z, eps)
    return x * (W.T @ s) - lo * (Wp.T @ s) - hi * (Wn.T @ s)


# The rules under lrpc's spec strings (the oracle's own reading of each spec, not lrpc's parser).
ZBOX_LOW, ZBOX_HIGH = -1.5, 2.0
RULES = {
    "zero": rule_zero,
    "epsilon": partial(rule_epsilon, eps=1e-6),
    "epsilon:eps=0.25": partial(rule_epsilon, eps=0.25),
    "zplus": partial(rule_alphabeta, alpha=1.0, beta=0.0),
    "alpha1beta0": partial(rule_alphabeta, alpha=1.0, beta=0.0),
    "alpha2beta1": partial(rule_alphabeta, alpha=2.0, beta=1.0),
    "alphabeta:alpha=1.5,beta=0.5": partial(rule_alphabeta, alpha=1.5, beta=0.5),
    "w2": rule_w2,
    "flat": rule_flat,
    "gamma": partial(rule_gamma, gamma=0.25),
    "gamma:gamma=0.5": partial(rule_gamma, gamma=0.5),
    f"zbox:low={ZBOX_LOW:g},high={ZBOX_HIGH:g}": partial(rule_zbox, low=ZBOX_LOW, high=ZBOX_HIGH),
}


# --------------------------------------------------------------------------------------------------
# A network: forward and explanation of one sample, and of a batch
# --------------------------------------------------------------------------------------------------


def forward(layers, x):
    """All activations [x, a1, ..., logits] of one flattened sample."""
    acts = [np.asarray(x, np.float64).reshape(-1)]
    for layer in layers:
        acts.append(layer.forward(acts[-1]))
    return acts


def explain_sample(layers, x, rule, target=None):
    """(logits, R_in) for one sample; target None = argmax (first maximum) of the logits."""
    acts = forward(layers, x)
    y = acts[-1]
    t = int(np.argmax(y)) if target is None else int(target)
    R = np.zeros_like(y)
    R[t] = y[t]
    for layer, a in zip(reversed(layers), reversed(acts[:-1])):
        R = layer.relevance(a, R, rule)
    return y, R.reshape(np.shape(x))


def explain(layers, X, rule, target=None):
    """(logits [N, classes], R [N, *sample shape]) for a batch X [N, ...]; target None, int or [N]."""
    targets = [None if target is None else (target if np.isscalar(target) else target[n]) for n in range(len(X))]
    pairs = [explain_sample(layers, X[n], rule, targets[n]) for n in range(len(X))]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# --------------------------------------------------------------------------------------------------
# Test inputs: drawn at random, kept only where float32 can be compared with float64 at 1e-5
# --------------------------------------------------------------------------------------------------


def sample_inputs(rule_spec, shape, seed):
    """float32 inputs: standard normal (negative values occur), or uniform in [low, high] for zbox."""
    rng = np.random.default_rng(seed)
    if rule_spec.startswith("zbox"):
        return rng.uniform(ZBOX_LOW, ZBOX_HIGH, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def well_conditioned(logits, target=None):
    """Whether the explained logit of each sample can be computed accurately in float32.

    All relevance is proportional to the explained logit y_t, so its float32 rounding error (about
    1e-7 of the logits' scale) reaches R as a relative error 1e-7 * max|y| / |y_t|. A sample whose
    y_t is a near cancellation (|y_t| < 0.1 max|y|) would be a float32 conditioning test, not a rule
    test. With target=None the top two logits must also be apart, so both precisions pick the same t.
    """
    logits = np.atleast_2d(logits)
    rows = np.arange(len(logits))
    t = np.argmax(logits, axis=1) if target is None else np.broadcast_to(target, (len(logits),))
    scale = np.abs(logits).max(axis=1)
    ok = np.abs(logits[rows, t]) >= 0.1 * scale
    if target is None and logits.shape[1] > 1:
        top2 = np.sort(logits, axis=1)[:, -2:]
        ok &= top2[:, 1] - top2[:, 0] > 1e-3 * scale
    return ok


def perturbed(layers, rng, rel):
    """The layers with every weight and bias multiplied by (1 + rel * N(0, 1)); S is kept."""
    jitter = lambda a: a * (1.0 + rel * rng.standard_normal(a.shape))
    return [
        Linear(jitter(L.W), jitter(L.b), L.S, L.in_shape, L.out_shape) if isinstance(L, Linear) else L for L in layers
    ]


def float32_sensitivity(layers, x, rule, target, rel=1e-7, seed=0):
    """Relative change of the oracle's R_in when weights, biases and x get relative noise `rel`.

    By backward error analysis a float32 dot product is the exact one of slightly perturbed
    operands (relative size ~ the unit roundoff 6e-8), so this estimates how much float32
    arithmetic alone can move R on this sample: a near-cancelling denominator (e.g. z-box's
    z = W x - W+ l - W- h on a hidden layer whose inputs leave [l, h]) shows up as a large value.
    """
    rng = np.random.default_rng(seed)
    R = explain_sample(layers, x, rule, target)[1]
    x2 = np.asarray(x, np.float64) * (1.0 + rel * rng.standard_normal(np.shape(x)))
    R2 = explain_sample(perturbed(layers, rng, rel), x2, rule, target)[1]
    den = np.linalg.norm(R)
    return np.linalg.norm(R2 - R) / den if den > 0 else float(np.linalg.norm(R2) > 0)


SENSITIVITY_LIMIT = 1e-6  # a tenth of the tests' tolerance 1e-5


def pick_inputs(layers, rule_spec, shape, batch, seed, target=None):
    """`batch` samples of `shape` from sample_inputs' distribution, keeping only the samples that
    are well conditioned in float32: the explained logit (see `well_conditioned`) and the whole
    explanation (float32_sensitivity <= SENSITIVITY_LIMIT), so that a 1e-5 comparison of float32
    with float64 tests the rules, not float32 cancellation. target: None (argmax), "min" (each
    sample's smallest logit), a class, or one class per sample. Deterministic."""
    targets = [target] * batch if target is None or isinstance(target, str) else list(np.broadcast_to(target, (batch,)))
    chosen, k = [], 0
    while len(chosen) < batch:
        assert k < 50, "no well-conditioned inputs found"
        for c in sample_inputs(rule_spec, (4 * batch, *shape), seed + 1000 * k):
            if len(chosen) == batch:
                break
            y = forward(layers, c)[-1]
            t = int(np.argmin(y)) if targets[len(chosen)] == "min" else targets[len(chosen)]
            if well_conditioned(y, t)[0] and float32_sensitivity(layers, c, RULES[rule_spec], t) <= SENSITIVITY_LIMIT:
                chosen.append(c)
        k += 1
    return np.stack(chosen)


# --------------------------------------------------------------------------------------------------
# Net: one network as an ONNX model and as oracle layers, from the same float32 weights
# --------------------------------------------------------------------------------------------------


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

    def conv(self, out_ch, kernel, *, bias=None, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET"):
        bias = self.use_bias if bias is None else bias
        C = self.shape[0]
        kernel = list(kernel)
        w = self._he((out_ch, C // group, *kernel), C // group * int(np.prod(kernel)))
        b = self._bias(out_ch) if bias else None
        name = f"w{self.count + 1}"
        self.inits[name] = w
        inputs = [name]
        if bias:
            self.inits[f"b{self.count + 1}"] = b
            inputs.append(f"b{self.count + 1}")
        attrs = dict(kernel_shape=kernel, group=group)
        if strides is not None:
            attrs["strides"] = list(strides)
        if dilations is not None:
            attrs["dilations"] = list(dilations)
        if auto_pad != "NOTSET":
            attrs["auto_pad"] = auto_pad
        elif pads is not None:
            attrs["pads"] = list(pads)
        layer = conv_layer(w, b, self.shape, strides, pads, dilations, group, auto_pad)
        self._node("Conv", inputs, **attrs)
        self.layers.append(layer)
        self.shape = layer.out_shape
        return self

    def gemm(self, n_out, *, bias=None, trans_b=1, alpha=1.0, beta=1.0, bias_2d=False):
        bias = self.use_bias if bias is None else bias
        assert len(self.shape) == 1, "Gemm takes [batch, k]; flatten first"
        k = self.shape[0]
        Wt = self._he((n_out, k), k)  # [n, k]
        B = Wt if trans_b else Wt.T.copy()
        C = (self._bias((1, n_out) if bias_2d else (n_out,))) if bias else None
        i = self.count + 1
        self.inits[f"w{i}"] = B
        inputs = [f"w{i}"]
        if bias:
            self.inits[f"b{i}"] = C
            inputs.append(f"b{i}")
        attrs = dict(transB=trans_b)
        if alpha != 1.0:
            attrs["alpha"] = alpha
        if beta != 1.0:
            attrs["beta"] = beta
        self._node("Gemm", inputs, **attrs)
        layer = gemm_layer(B, C, alpha, beta, trans_b)
        self.layers.append(layer)
        self.shape = layer.out_shape
        return self

    def matmul(self, m, *, bias=None, bias_first=False):
        """MatMul by a constant [k, m], then (if bias) Add of a constant [m] (bias_first: Add(b, mm))."""
        bias = self.use_bias if bias is None else bias
        *lead, k = self.shape
        M = self._he((k, m), k)
        i = self.count + 1
        self.inits[f"w{i}"] = M
        self._node("MatMul", [f"w{i}"])
        b = None
        if bias:
            b = self._bias(m)
            self.inits[f"b{i}"] = b
            name = self._next("Add")
            ins = [f"b{i}", self.cur] if bias_first else [self.cur, f"b{i}"]
            self.nodes.append(helper.make_node("Add", ins, [name], name=name))
            self.cur = name
        layer = matmul_layer(M, b, tuple(lead))
        self.layers.append(layer)
        self.shape = layer.out_shape
        return self

    def relu(self):
        self._node("Relu", [])
        self.layers.append(Relu())
        return self

    def maxpool(self, kernel, strides=None, pads=None):
        attrs = dict(kernel_shape=list(kernel))
        if strides is not None:
            attrs["strides"] = list(strides)
        if pads is not None:
            attrs["pads"] = list(pads)
        self._node("MaxPool", [], **attrs)
        layer, self.shape = maxpool_layer(self.shape, kernel, strides, pads)
        self.layers.append(layer)
        return self

    def activation(self, op, fn, **attrs):
        """An elementwise ONNX activation `op` whose float64 forward is `fn`."""
        self._node(op, [], **attrs)
        self.layers.append(Elementwise(fn))
        return self

    def transpose(self, perm):
        """Transpose of the per-sample axes by `perm` (the batch axis stays first)."""
        self._node("Transpose", [], perm=[0, *[p + 1 for p in perm]])
        index = np.arange(int(np.prod(self.shape))).reshape(self.shape).transpose(perm).reshape(-1)
        self.layers.append(Permute(index))
        self.shape = tuple(self.shape[p] for p in perm)
        return self

    def reshape(self, shape):
        """Reshape to [batch, *shape] (written with 0 for the batch axis; -1 allowed in `shape`)."""
        name = f"shape{self.count + 1}"
        self.inits[name] = np.array([0, *shape], np.int64)
        self._node("Reshape", [name])
        self.layers.append(Identity())
        n = int(np.prod(self.shape))
        self.shape = tuple(n // -int(np.prod(shape)) if d == -1 else d for d in shape)
        return self

    def flatten(self):
        self._node("Flatten", [], axis=1)
        self.layers.append(Identity())
        self.shape = (int(np.prod(self.shape)),)
        return self

    def softmax(self):
        """An output Softmax: lrpc explains its input, so the oracle skips it."""
        self._node("Softmax", [], axis=1)
        return self

    def model(self, dtype=np.float32) -> onnx.ModelProto:
        """The ONNX model; dtype=np.float64 gives the same net in double (weights cast exactly)."""
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        cast = lambda a: a.astype(dtype) if a.dtype == np.float32 else a
        graph = helper.make_graph(
            self.nodes,
            "oracle_net",
            [helper.make_tensor_value_info("x", elem, ["batch", *self.input_shape])],
            [helper.make_tensor_value_info(self.cur, elem, ["batch", *self.shape])],
            [numpy_helper.from_array(cast(a), n) for n, a in self.inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


# --------------------------------------------------------------------------------------------------
# Helpers shared by the tests: run a compiled model, compare with the oracle
# --------------------------------------------------------------------------------------------------


def session(proto: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(sess, X, target=None, dtype=np.float32):
    """(outputs by name) of a compiled model on X, with the `target` input if it has one."""
    feeds = {"x": np.asarray(X, dtype)}
    if any(i.name == "target" for i in sess.get_inputs()):
        feeds["target"] = np.asarray(target, np.int64)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def rel_err_per_sample(actual, expected):
    """||actual - expected|| / ||expected|| for each sample (L2 over all non-batch axes)."""
    a = np.asarray(actual, np.float64).reshape(len(actual), -1)
    e = np.asarray(expected, np.float64).reshape(len(expected), -1)
    num = np.linalg.norm(a - e, axis=1)
    den = np.linalg.norm(e, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))


def assert_rel_close(actual, expected, tol, what="relevance"):
    err = rel_err_per_sample(actual, expected)
    assert np.all(err <= tol), f"{what}: relative L2 error per sample {err} exceeds {tol:g}"


def softmax(y):
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_against_oracle(model, layers, X, rule_spec, target=None, tol=1e-5, compiled=None):
    """Compile `model` with lrpc (unless `compiled` is given), run it on X and compare its outputs
    and relevance with the oracle. Returns (relevance from lrpc, oracle relevance, oracle logits)."""
    import lrpc

    if compiled is None:
        compiled = lrpc.compile(model, rule=rule_spec, target="input" if isinstance(target, np.ndarray) else target)
    proto = compiled
    sess = session(proto)
    double = sess.get_inputs()[0].type == "tensor(double)"
    out = run(sess, X, target, np.float64 if double else np.float32)
    first = sess.get_outputs()[0].name
    logits, R = explain(layers, np.asarray(X, np.float64), RULES[rule_spec], target)
    model_out = softmax(logits) if model.graph.node[-1].op_type == "Softmax" else logits
    assert_rel_close(out[first], model_out, min(tol, 1e-5), what="model output (the oracle's forward pass)")
    assert np.all(well_conditioned(logits, target)), "ill-conditioned explained logit: use pick_inputs"
    # (an all-zero oracle relevance is legitimate, e.g. z+ explaining a unit with no positive
    # contribution; rel_err_per_sample then demands exactly zero from lrpc too)
    assert out["relevance"].shape == np.shape(X)
    assert_rel_close(out["relevance"], R, tol)
    return out["relevance"], R, logits
