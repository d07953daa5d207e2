"""Element-wise ops, each declared once: its LRP rule, its derivative and its TensorFlow expression.

    activation(op, f′, tf)       R_x = R_y (relevance passes, the LRP convention for activations),
                                 g_x = g ⊙ f′(x), and y = f(x) in TensorFlow for --format savedmodel
    differentiable(op, f′, tf)   no relevance rule (lrpc refuses it under LRP); the gradient and TF only

f′ is written with the builder as `f′(b, node, x, y)`, through x and y = f(x); the TF expression as
`tf_fn(tf, inputs, attrs)` with the tensorflow module passed in, so that this module, read by rules/,
methods/ and savedmodel/, never imports TensorFlow. rules/elementwise.py, methods/elementwise.py and
savedmodel/ops.py register every declaration in their tables.

    op            f(x)                                f′(x)
    LeakyRelu(α)  x if x ≥ 0 else αx                  1 if x > 0 else α
    PRelu(s)      x if x ≥ 0 else s·x                 1 if x > 0 else s (broadcast)
    Elu(α)        x if x ≥ 0 else α(eˣ − 1)           1 if x > 0 else y + α
    Selu(α, λ)    λx if x > 0 else λα(eˣ − 1)         λ if x > 0 else y + λα
    Celu(α)       max(0, x) + min(0, α(e^(x/α) − 1))  1 if x > 0 else y/α + 1
    Softplus      log(1 + eˣ)                         σ(x)
    Tanh, Sigmoid tanh x, σ(x)                        1 − y², y(1 − y)
    HardSigmoid   clip(αx + β, 0, 1)                  α if 0 < y < 1 else 0
    Clip(lo, hi)  min(max(x, lo), hi)                 [lo < x < hi]
    ThresholdedRelu(α)  x if x > α else 0             [x > α]
    Shrink(λ, β)  x − β if x > λ, x + β if x < −λ, else 0   [|x| > λ]
    HardSwish     x·clip(x/6 + ½, 0, 1)               0, x/3 + ½, 1 for x < −3, ≤ 3, > 3
    Gelu          x·Φ(x); tanh form ½x(1 + t), t = tanh(√(2/π)(x + 0.044715x³))
                                                      Φ(x) + x·φ(x); ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²)
    Mish          x·tanh(softplus x)                  tanh(softplus x) + x·(1 − tanh²(softplus x))·σ(x)
    Swish(α)      x·σ(αx)                             σ(αx) + αx·σ(αx)(1 − σ(αx))
    Softsign      x / (1 + |x|)                       1/(1 + |x|)²
    Neg           −x                                  −1   (R_x = x ⊙ (−1)·R/(−x) = R)
    Erf, Exp, Log, Sqrt   (differentiable only)       2/√π·exp(−x²), y, 1/x, 1/(2y)
    Abs, Reciprocal, Pow(x, p), p constant            sign(x), −y², p·x^(p−1)

At a kink the one-sided value PyTorch uses is taken: f′ = 0 at Relu's 0, Clip's bounds (ReLU6,
hardtanh), ThresholdedRelu's α, Shrink's ±λ and where HardSigmoid saturates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875  # the ONNX defaults


@dataclass(frozen=True)
class Elementwise:
    op: str
    derivative: Callable  # (b, node, x, y) -> f′(x), built with the builder
    tf: Callable  # (tf, inputs, attrs) -> y
    passes_relevance: bool  # the LRP rule R_x = R_y; False: no relevance rule


ELEMENTWISE: dict[str, Elementwise] = {}


def _declare(op: str, derivative: Callable, tf: Callable, passes_relevance: bool) -> None:
    if op in ELEMENTWISE:
        raise ValueError(f"{op} is declared twice")
    ELEMENTWISE[op] = Elementwise(op, derivative, tf, passes_relevance)


def activation(op: str, derivative: Callable, tf: Callable) -> None:
    """Declare an element-wise activation whose relevance passes unchanged, R_x = R_y."""
    _declare(op, derivative, tf, True)


def differentiable(op: str, derivative: Callable, tf: Callable) -> None:
    """Declare an element-wise op lrpc differentiates (gradient methods) but has no relevance rule for."""
    _declare(op, derivative, tf, False)


def passing_ops() -> list[str]:
    return [op for op, e in ELEMENTWISE.items() if e.passes_relevance]


# --- the derivatives' pieces (builder) ---------------------------------------------------------------


def _attr(node, name, default):
    return node.attributes.get_float(name, default)


def _where_positive(b, x, then, otherwise):
    return b.op("Where", b.op("Greater", x, b.const(0.0)), then, otherwise)


def _clip_mask(b, node, x, y):
    mask = None
    for index, op in ((1, "Greater"), (2, "Less")):
        bound = node.inputs[index] if len(node.inputs) > index else None
        if bound is not None:
            inside = b.op(op, x, bound)
            mask = inside if mask is None else b.op("And", mask, inside)
    return b.const(1.0) if mask is None else b.op("Cast", mask, to=b.dtype)


def _hard_sigmoid(b, node, x, y):
    inside = b.op("And", b.op("Greater", y, b.const(0.0)), b.op("Less", y, b.const(1.0)))
    return b.op("Mul", b.op("Cast", inside, to=b.dtype), b.const(_attr(node, "alpha", 0.2)))


def _hard_swish(b, node, x, y):
    middle = b.op("Add", b.op("Mul", x, b.const(1.0 / 3.0)), b.const(0.5))
    return b.op(
        "Where",
        b.op("Less", x, b.const(-3.0)),
        b.const(0.0),
        b.op("Where", b.op("Greater", x, b.const(3.0)), b.const(1.0), middle),
    )


def _gelu(b, node, x, y):
    if node.attributes.get_string("approximate", "none") == "tanh":
        c = math.sqrt(2.0 / math.pi)
        cubic = b.op("Add", x, b.op("Mul", b.const(0.044715), b.op("Mul", x, b.op("Mul", x, x))))
        t = b.op("Tanh", b.op("Mul", b.const(c), cubic))
        slope = b.op(
            "Mul", b.const(c), b.op("Add", b.const(1.0), b.op("Mul", b.const(3 * 0.044715), b.op("Mul", x, x)))
        )
        return b.op(
            "Add",
            b.op("Mul", b.const(0.5), b.op("Add", b.const(1.0), t)),
            b.op("Mul", b.op("Mul", b.const(0.5), x), b.op("Mul", b.op("Sub", b.const(1.0), b.op("Mul", t, t)), slope)),
        )
    cdf = b.op("Mul", b.const(0.5), b.op("Add", b.const(1.0), b.op("Erf", b.op("Mul", x, b.const(1 / math.sqrt(2))))))
    pdf = b.op("Mul", b.const(1 / math.sqrt(2 * math.pi)), b.op("Exp", b.op("Mul", b.const(-0.5), b.op("Mul", x, x))))
    return b.op("Add", cdf, b.op("Mul", x, pdf))


def _mish(b, node, x, y):
    t = b.op("Tanh", b.op("Softplus", x))
    return b.op("Add", t, b.op("Mul", b.op("Mul", x, b.op("Sub", b.const(1.0), b.op("Mul", t, t))), b.op("Sigmoid", x)))


def _swish(b, node, x, y):
    ax = b.op("Mul", x, b.const(_attr(node, "alpha", 1.0)))
    sig = b.op("Sigmoid", ax)
    return b.op("Add", sig, b.op("Mul", b.op("Mul", ax, sig), b.op("Sub", b.const(1.0), sig)))


def _selu(b, n, x, y):
    gamma = _attr(n, "gamma", SELU_GAMMA)
    return _where_positive(b, x, b.const(gamma), b.op("Add", y, b.const(gamma * _attr(n, "alpha", SELU_ALPHA))))


# --- the TensorFlow expressions (tf passed in; python scalars take the tensor's dtype) ----------------


def _tf_clip(tf, x, at):
    y = x[0]
    if len(x) > 1 and x[1] is not None:
        y = tf.maximum(y, x[1])
    if len(x) > 2 and x[2] is not None:
        y = tf.minimum(y, x[2])
    return y


def _tf_gelu(tf, x, at):
    v = x[0]
    if at.get("approximate", "none") == "tanh":
        return 0.5 * v * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v * v * v)))
    return 0.5 * v * (1.0 + tf.math.erf(v / math.sqrt(2.0)))


def _tf_celu(tf, x, at):  # max(0, x) + min(0, α(exp(x/α) − 1))
    alpha = at.get("alpha", 1.0)
    return tf.nn.relu(x[0]) + tf.minimum(tf.zeros_like(x[0]), alpha * tf.math.expm1(x[0] / alpha))


def _tf_selu(tf, x, at):
    alpha, gamma = at.get("alpha", SELU_ALPHA), at.get("gamma", SELU_GAMMA)
    return gamma * tf.where(x[0] > 0, x[0], alpha * (tf.exp(x[0]) - 1))


# --- the declarations ----------------------------------------------------------------------------------

# fmt: off
activation("LeakyRelu", lambda b, n, x, y: _where_positive(b, x, b.const(1.0), b.const(_attr(n, "alpha", 0.01))),
           lambda tf, x, at: tf.where(x[0] >= 0, x[0], x[0] * at.get("alpha", 0.01)))
activation("PRelu", lambda b, n, x, y: _where_positive(b, x, b.const(1.0), n.inputs[1]),
           lambda tf, x, at: tf.where(x[0] >= 0, x[0], x[0] * x[1]))
activation("Elu",
           lambda b, n, x, y: _where_positive(b, x, b.const(1.0), b.op("Add", y, b.const(_attr(n, "alpha", 1.0)))),
           lambda tf, x, at: tf.where(x[0] >= 0, x[0], at.get("alpha", 1.0) * tf.math.expm1(x[0])))
activation("Selu", _selu, _tf_selu)
activation("Celu", lambda b, n, x, y: _where_positive(
               b, x, b.const(1.0), b.op("Add", b.op("Div", y, b.const(_attr(n, "alpha", 1.0))), b.const(1.0))),
           _tf_celu)
activation("Softplus", lambda b, n, x, y: b.op("Sigmoid", x), lambda tf, x, at: tf.math.softplus(x[0]))
activation("Tanh", lambda b, n, x, y: b.op("Sub", b.const(1.0), b.op("Mul", y, y)), lambda tf, x, at: tf.tanh(x[0]))
activation("Sigmoid", lambda b, n, x, y: b.op("Mul", y, b.op("Sub", b.const(1.0), y)),
           lambda tf, x, at: tf.sigmoid(x[0]))
activation("HardSigmoid", _hard_sigmoid,
           lambda tf, x, at: tf.clip_by_value(at.get("alpha", 0.2) * x[0] + at.get("beta", 0.5), 0.0, 1.0))
activation("Clip", _clip_mask, _tf_clip)
activation("ThresholdedRelu",
           lambda b, n, x, y: b.op("Cast", b.op("Greater", x, b.const(_attr(n, "alpha", 1.0))), to=b.dtype),
           lambda tf, x, at: tf.where(x[0] > at.get("alpha", 1.0), x[0], tf.zeros_like(x[0])))
activation("Shrink",
           lambda b, n, x, y: b.op("Cast", b.op("Greater", b.op("Abs", x), b.const(_attr(n, "lambd", 0.5))),
                                   to=b.dtype),
           lambda tf, x, at: tf.where(tf.abs(x[0]) > at.get("lambd", 0.5),
                                      x[0] - tf.sign(x[0]) * at.get("bias", 0.0), tf.zeros_like(x[0])))
activation("HardSwish", _hard_swish, lambda tf, x, at: x[0] * tf.clip_by_value(x[0] / 6.0 + 0.5, 0.0, 1.0))
activation("Gelu", _gelu, _tf_gelu)
activation("Mish", _mish, lambda tf, x, at: x[0] * tf.tanh(tf.math.softplus(x[0])))
activation("Swish", _swish, lambda tf, x, at: x[0] * tf.sigmoid(at.get("alpha", 1.0) * x[0]))
activation("Softsign",
           lambda b, n, x, y: b.op("Reciprocal", b.op("Mul", *[b.op("Add", b.const(1.0), b.op("Abs", x))] * 2)),
           lambda tf, x, at: x[0] / (1.0 + tf.abs(x[0])))
activation("Neg", lambda b, n, x, y: b.const(-1.0), lambda tf, x, at: tf.negative(x[0]))

differentiable("Erf",
               lambda b, n, x, y: b.op("Mul", b.const(2 / math.sqrt(math.pi)),
                                       b.op("Exp", b.op("Neg", b.op("Mul", x, x)))),
               lambda tf, x, at: tf.math.erf(x[0]))
differentiable("Exp", lambda b, n, x, y: y, lambda tf, x, at: tf.exp(x[0]))
differentiable("Log", lambda b, n, x, y: b.op("Reciprocal", x), lambda tf, x, at: tf.math.log(x[0]))
differentiable("Sqrt", lambda b, n, x, y: b.op("Div", b.const(0.5), y), lambda tf, x, at: tf.sqrt(x[0]))
differentiable("Abs", lambda b, n, x, y: b.op("Sign", x), lambda tf, x, at: tf.abs(x[0]))
differentiable("Reciprocal", lambda b, n, x, y: b.op("Neg", b.op("Mul", y, y)),
               lambda tf, x, at: tf.math.reciprocal(x[0]))
differentiable("Pow",
               lambda b, n, x, y: b.op("Mul", n.inputs[1], b.op("Pow", x, b.op("Sub", n.inputs[1], b.const(1.0)))),
               lambda tf, x, at: tf.pow(x[0], tf.cast(x[1], x[0].dtype)))
# fmt: on
