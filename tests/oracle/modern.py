"""The float64 graph oracle's modern layers: self-gated activations, gates, norms (numpy only).

Each builder adds to a GraphNet (graphnet.py) the ONNX nodes an exporter writes and one oracle op
that knows what the layer is by construction — no pattern matching — with the rule in matrix form:

  activation  y = x·f(x) (SiLU, GELU erf and tanh, QuickGELU, Mish, HardSwish; written out of primitive
              ops or as the ONNX op) and the one-op activations (Celu, Softsign, Swish, HardSigmoid,
              PRelu, ThresholdedRelu):  R_x = R
  gate        y = x ⊙ g, g = σ(W₂ relu(W₁ pool x)) broadcast over space:
              gate-constant  R_x = R, R_g = 0;   half  R_x = sum_to(R/2), R_g = sum_to(R/2)
  norm        y = J x + β with σ held fixed: J = diag(γ·inv) (I − 𝟙𝟙ᵀ/n) per normalized group, as an
              explicit matrix;  R_x = x ⊙ Jᵀ (R / stab(y))     (LayerNorm, InstanceNorm, GroupNorm)
  rmsnorm     y = x · rsqrt(mean x² + ε) · γ:  R_x = R
"""

from __future__ import annotations

import math

import numpy as np

from .ops import FnOp, passes, sum_to
from .rules import divide

ERF = np.vectorize(math.erf)
SIGMOID = lambda x: 1.0 / (1.0 + np.exp(-x))
ACTIVATIONS = {  # name → float64 forward
    "silu": lambda x: x * SIGMOID(x),
    "quickgelu": lambda x: x * SIGMOID(1.702 * x),
    "gelu": lambda x: 0.5 * x * (1.0 + ERF(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "mish": lambda x: x * np.tanh(np.logaddexp(x, 0.0)),
    "hardswish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
}
ACTIVATIONS.update({f"{k}_op": v for k, v in ACTIVATIONS.items() if k in ("gelu", "gelu_tanh", "mish", "hardswish")})
PRELU_SLOPE = 0.25
ONE_OP = {  # name → (ONNX op, attributes, float64 forward): the activations that are one op in every exporter
    "celu_op": ("Celu", {"alpha": 0.7}, lambda x: np.maximum(x, 0) + np.minimum(0, 0.7 * np.expm1(x / 0.7))),
    "softsign_op": ("Softsign", {}, lambda x: x / (1.0 + np.abs(x))),
    "swish_op": ("Swish", {"alpha": 1.5}, lambda x: x * SIGMOID(1.5 * x)),  # opset 24
    "hardsigmoid_op": ("HardSigmoid", {"alpha": 0.1, "beta": 0.5}, lambda x: np.clip(0.1 * x + 0.5, 0.0, 1.0)),
    "prelu_op": ("PRelu", {}, lambda x: np.where(x >= 0, x, PRELU_SLOPE * x)),  # the slope a second input
    "thresholdedrelu_op": ("ThresholdedRelu", {"alpha": 0.2}, lambda x: np.where(x > 0.2, x, 0.0)),
    "shrink_op": (
        "Shrink",
        {"lambd": 0.3, "bias": 0.1},
        lambda x: np.where(np.abs(x) > 0.3, x - 0.1 * np.sign(x), 0.0),
    ),
}
ACTIVATIONS.update({name: forward for name, (_, _, forward) in ONE_OP.items()})


def _pattern(g, name, x):
    """The ONNX nodes of activation `name` on x, as torch.onnx writes them (or the op, for `*_op`)."""
    c = lambda v: g.const(np.array(v, np.float32))
    n = g.node
    if name == "silu":
        return n("Mul", [x, n("Sigmoid", [x])])
    if name == "quickgelu":
        return n("Mul", [x, n("Sigmoid", [n("Mul", [x, c(1.702)])])])
    if name == "gelu":
        return n("Mul", [n("Mul", [x, n("Add", [n("Erf", [n("Div", [x, c(math.sqrt(2.0))])]), c(1.0)])]), c(0.5)])
    if name == "gelu_tanh":
        cube = n("Mul", [n("Pow", [x, c(3.0)]), c(0.044715)])
        t = n("Tanh", [n("Mul", [n("Add", [x, cube]), c(math.sqrt(2.0 / math.pi))])])
        return n("Mul", [n("Mul", [x, c(0.5)]), n("Add", [t, c(1.0)])])
    if name == "mish":
        return n("Mul", [x, n("Tanh", [n("Softplus", [x])])])
    if name == "hardswish":  # x·relu6(x + 3)/6, as Keras writes it
        return n("Div", [n("Mul", [x, n("Clip", [n("Add", [x, c(3.0)]), c(0.0), c(6.0)])]), c(6.0)])
    if name == "prelu_op":
        return n("PRelu", [x, c(np.full((g.shapes[x][0], 1, 1), PRELU_SLOPE))])
    if name in ONE_OP:
        return n(ONE_OP[name][0], [x], **ONE_OP[name][1])
    op = {
        "gelu_op": ("Gelu", {}),
        "gelu_tanh_op": ("Gelu", {"approximate": "tanh"}),
        "mish_op": ("Mish", {}),
        "hardswish_op": ("HardSwish", {}),
    }[name]
    return n(op[0], [x], **op[1])


def activation(g, name, x):
    out = _pattern(g, name, x)
    return g._add(FnOp([x], out, lambda xs: ACTIVATIONS[name](xs[0]), passes), g.shapes[x])


def sigmoid(g, x):
    return g._add(FnOp([x], g.node("Sigmoid", [x]), lambda xs: SIGMOID(xs[0]), passes), g.shapes[x])


def gate(g, x, rule, hidden=2, upsampled=False):
    """Squeeze-excitation: x ⊙ σ(conv₂ relu(conv₁ x)), conv₁'s kernel the whole map (a pooled summary);
    `upsampled`: ghostnetv2's x ⊙ Resize(σ(conv x)), the gate computed at half resolution."""
    C, H, W = g.shapes[x]
    if upsampled:
        s = g.resize(sigmoid(g, g.conv(x, C, (2, 2), strides=[2, 2])), "nearest", scales=[1, 2, 2])
    else:
        s = sigmoid(g, g.conv(g.relu(g.conv(x, hidden, (H, W))), C, (1, 1)))

    def back(xs, y, R, eps):
        if rule == "gate-constant":
            return [R, np.zeros_like(xs[1])]
        return [sum_to(R / 2, xs[0].shape), sum_to(R / 2, xs[1].shape)]

    return g._add(FnOp([x, s], g.node("Mul", [x, s]), lambda xs: xs[0] * xs[1], back), g.shapes[x])


def _norm_matrix(x, groups, gamma, eps):
    """(y − β, J) of a norm over `groups` (a list of flat index arrays of x), σ fixed at its value."""
    flat = x.reshape(-1)
    J = np.zeros((flat.size, flat.size))
    for idx in groups:
        n = idx.size
        inv = 1.0 / math.sqrt(np.var(flat[idx]) + eps)
        J[np.ix_(idx, idx)] = (gamma.reshape(-1)[idx] * inv)[:, None] * (np.eye(n) - 1.0 / n)
    return J @ flat, J


def norm(g, x, kind, eps=1e-5, groups=2, decomposed=False):
    """LayerNorm over the last per-sample axis ("layer"), InstanceNorm ("instance", per channel over space)
    or GroupNorm ("group", opset ≥ 18), γ and β random; `decomposed`: LayerNorm written out of primitive ops."""
    shape = g.shapes[x]
    C = shape[0]
    rng = g.rng
    affine_shape = {"layer": shape[-1:], "instance": (C,), "group": (C,)}[kind]
    gamma = rng.uniform(0.5, 1.5, affine_shape).astype(np.float32)
    beta = rng.normal(0.0, 0.3, affine_shape).astype(np.float32)
    index = np.arange(int(np.prod(shape))).reshape(shape)
    if kind == "layer":
        parts = list(index.reshape(-1, shape[-1]))
        g_full, b_full = np.broadcast_to(gamma, shape), np.broadcast_to(beta, shape)
    else:
        per = C if kind == "instance" else groups
        parts = list(index.reshape(per, -1))
        bcast = (C,) + (1,) * (len(shape) - 1)
        g_full = np.broadcast_to(gamma.reshape(bcast), shape)
        b_full = np.broadcast_to(beta.reshape(bcast), shape)
    g64, b64 = g_full.astype(np.float64), b_full.astype(np.float64).reshape(-1)

    def fwd(xs):
        lin, _ = _norm_matrix(xs[0], parts, g64, eps)
        return (lin + b64).reshape(shape)

    def back(xs, y, R, eps_rule):
        _, J = _norm_matrix(xs[0], parts, g64, eps)
        return [(xs[0].reshape(-1) * (J.T @ divide(R, y, eps_rule).reshape(-1))).reshape(shape)]

    c = lambda v: g.const(np.asarray(v, np.float32))
    if kind == "layer" and decomposed:
        axis = [len(shape)]
        d = g.node("Sub", [x, g.node("ReduceMean", [x], axes=axis)])
        var = g.node("ReduceMean", [g.node("Pow", [d, c(2.0)])], axes=axis)
        out = g.node(
            "Add",
            [g.node("Mul", [g.node("Div", [d, g.node("Sqrt", [g.node("Add", [var, c(eps)])])]), c(gamma)]), c(beta)],
        )
    elif kind == "layer":
        out = g.node("LayerNormalization", [x, c(gamma), c(beta)], axis=-1, epsilon=eps)
    elif kind == "instance":
        out = g.node("InstanceNormalization", [x, c(gamma), c(beta)], epsilon=eps)
    else:
        out = g.node("GroupNormalization", [x, c(gamma), c(beta)], num_groups=groups, epsilon=eps)
    return g._add(FnOp([x], out, fwd, back), shape)


def rms_norm(g, x, eps=1e-6):
    """x · 1/√(mean over the last axis of x² + ε) · γ, written as Llama's export writes it."""
    shape = g.shapes[x]
    gamma = g.rng.uniform(0.5, 1.5, shape[-1:]).astype(np.float32)
    c = lambda v: g.const(np.asarray(v, np.float32))
    ms = g.node("ReduceMean", [g.node("Pow", [x, c(2.0)])], axes=[len(shape)])
    r = g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [ms, c(eps)])])])
    out = g.node("Mul", [c(gamma), g.node("Mul", [x, r])])
    fwd = lambda xs: xs[0] / np.sqrt(np.mean(xs[0] ** 2, axis=-1, keepdims=True) + eps) * gamma.astype(np.float64)
    return g._add(FnOp([x], out, fwd, passes), shape)
