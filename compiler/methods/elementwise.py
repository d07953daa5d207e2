"""Backward rules of element-wise activations: g_x = g ⊙ f′(x), with f′ written through x and y = f(x).

    Relu          [x > 0]                     guided: [x > 0] ⊙ [g > 0]     deconvnet: [g > 0]
    LeakyRelu(α)  1 if x > 0 else α           PRelu(s): 1 if x > 0 else s (broadcast)
    Elu(α)        1 if x > 0 else y + α       Selu(α, λ): λ if x > 0 else y + λα
    Celu(α)       1 if x > 0 else y/α + 1     Softplus: σ(x)
    Tanh          1 − y²                      Sigmoid: y(1 − y)
    HardSigmoid   α if 0 < y < 1 else 0       Clip(lo, hi): [lo < x < hi]
    Erf           2/√π·exp(−x²)               Exp: y      Log: 1/x      Sqrt: 1/(2y)
    Abs           sign(x)                     Neg: −1     Reciprocal: −y²
    Pow(x, p)     p·x^(p−1)                   (a constant exponent p)
    HardSwish     0, x/3 + ½, 1 for x < −3, ≤ 3, > 3       Softsign: 1/(1 + |x|)²
    Gelu          Φ(x) + x·φ(x); tanh form: ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²)
    Mish          tanh(softplus x) + x·(1 − tanh²(softplus x))·σ(x)
    Swish(α)      σ(αx) + αx·σ(αx)(1 − σ(αx))
    Softmax       g_x = y ⊙ (g − Σ_axis g ⊙ y)
    LogSoftmax    g_x = g − exp(y) ⊙ Σ_axis g

At a kink the one-sided value PyTorch uses is taken: Relu′(0) = 0, Clip′ = 0 at its bounds (ReLU6,
hardtanh), HardSigmoid′ = 0 where it saturates.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import LrpcError, node_label
from .table import gradient_rule, reuse_lrp_rule


def _attr(node, name, default):
    return node.attributes.get_float(name, default)


def _positive(b, x):
    return b.op("Greater", x, b.const(0.0))


def _where_positive(b, x, then, otherwise):
    return b.op("Where", _positive(b, x), then, otherwise)


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


SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875  # the ONNX defaults

# op → f′ as a function of (builder, node, x, y)
DERIVATIVES = {
    "LeakyRelu": lambda b, n, x, y: _where_positive(b, x, b.const(1.0), b.const(_attr(n, "alpha", 0.01))),
    "PRelu": lambda b, n, x, y: _where_positive(b, x, b.const(1.0), n.inputs[1]),
    "Elu": lambda b, n, x, y: _where_positive(b, x, b.const(1.0), b.op("Add", y, b.const(_attr(n, "alpha", 1.0)))),
    "Selu": lambda b, n, x, y: _where_positive(
        b,
        x,
        b.const(_attr(n, "gamma", SELU_GAMMA)),
        b.op("Add", y, b.const(_attr(n, "gamma", SELU_GAMMA) * _attr(n, "alpha", SELU_ALPHA))),
    ),
    "Celu": lambda b, n, x, y: _where_positive(
        b, x, b.const(1.0), b.op("Add", b.op("Div", y, b.const(_attr(n, "alpha", 1.0))), b.const(1.0))
    ),
    "Softplus": lambda b, n, x, y: b.op("Sigmoid", x),
    "Tanh": lambda b, n, x, y: b.op("Sub", b.const(1.0), b.op("Mul", y, y)),
    "Sigmoid": lambda b, n, x, y: b.op("Mul", y, b.op("Sub", b.const(1.0), y)),
    "HardSigmoid": _hard_sigmoid,
    "Clip": _clip_mask,
    "Erf": lambda b, n, x, y: b.op("Mul", b.const(2 / math.sqrt(math.pi)), b.op("Exp", b.op("Neg", b.op("Mul", x, x)))),
    "Exp": lambda b, n, x, y: y,
    "Log": lambda b, n, x, y: b.op("Reciprocal", x),
    "Sqrt": lambda b, n, x, y: b.op("Div", b.const(0.5), y),
    "Abs": lambda b, n, x, y: b.op("Sign", x),
    "Neg": lambda b, n, x, y: b.const(-1.0),
    "Reciprocal": lambda b, n, x, y: b.op("Neg", b.op("Mul", y, y)),
    "Pow": lambda b, n, x, y: b.op("Mul", n.inputs[1], b.op("Pow", x, b.op("Sub", n.inputs[1], b.const(1.0)))),
    "HardSwish": _hard_swish,
    "Gelu": _gelu,
    "Mish": _mish,
    "Swish": _swish,
    "Softsign": lambda b, n, x, y: b.op("Reciprocal", b.op("Mul", *[b.op("Add", b.const(1.0), b.op("Abs", x))] * 2)),
}


@gradient_rule(*DERIVATIVES)
def chain(node, g_out, b, relu):
    x, y = node.inputs[0], node.outputs[0]
    if node.op_type == "Pow" and node.inputs[1].const_value is None:
        raise LrpcError(f"{node_label(node)}: a Pow with a computed exponent; lrpc differentiates x^p for a constant p")
    return [b.op("Mul", g_out[0], DERIVATIVES[node.op_type](b, node, x, y))] + [None] * (len(node.inputs) - 1)


@gradient_rule("Relu")
def relu_backward(node, g_out, b, relu):
    """The method's ReLU mode: the gradient, guided backprop or deconvnet."""
    g, x = g_out[0], node.inputs[0]
    if relu == "deconvnet":
        return [b.op("Relu", g)]
    g = b.op("Where", _positive(b, x), g, b.const(0.0))
    return [b.op("Relu", g) if relu == "guided" else g]


def _axis_sum(b, node, value):
    axis = node.attributes.get_int("axis", -1)
    return b.op("ReduceSum", value, b.const(np.array([axis], np.int64), dtype=np.int64), keepdims=1)


@gradient_rule("Softmax")
def softmax_backward(node, g_out, b, relu):
    g, y = g_out[0], node.outputs[0]
    return [b.op("Mul", y, b.op("Sub", g, _axis_sum(b, node, b.op("Mul", g, y))))]


@gradient_rule("LogSoftmax")
def log_softmax_backward(node, g_out, b, relu):
    g, y = g_out[0], node.outputs[0]
    return [b.op("Sub", g, b.op("Mul", b.op("Exp", y), _axis_sum(b, node, g)))]


reuse_lrp_rule("Identity", "Dropout")
