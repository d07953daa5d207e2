"""The ops of the DAG oracle: each maps its input activations to one output and the relevance R at
that output back to its inputs (see __init__ for the equations), and the constructors of the ops that
the builders (graphnet.py, net.py) and the ONNX reader share.

  LinearOp  an explicit Linear (layers.py) under the op's rule (rules.py)
  RouteOp   y = (x₁ ‖ … ‖ xₙ ‖ fill)[index], R_in = bincount(index, R)
  FnOp      any other forward, with its backward taking the ε of the rule (rules.rule_eps)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .layers import Linear, resize_matrix
from .rules import divide, rule, rule_eps


@dataclass
class LinearOp:
    inputs: list
    output: str
    L: Linear

    def forward(self, xs):
        return self.L.forward(xs[0].reshape(-1)).reshape(self.L.out_shape)

    def relevance(self, xs, y, R, spec):
        return [rule(spec)(self.L, xs[0].reshape(-1), R.reshape(-1)).reshape(xs[0].shape)]


@dataclass
class RouteOp:
    inputs: list
    output: str
    index: np.ndarray  # per output element: its position in the concatenated flat inputs, −1: `fill`
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


def passes(xs, y, R, eps):
    """The backward of an op that relevance passes unchanged."""
    return [R]


def passthrough(src, out, fn) -> FnOp:
    """y = fn(x) elementwise, R_x = R."""
    return FnOp([src], out, lambda xs: fn(xs[0]), passes)


def sum_to(a, shape):
    """a summed over the copies broadcasting made of each element of an array of `shape`."""
    n = int(np.prod(shape, dtype=np.int64))
    source = np.broadcast_to(np.arange(n).reshape(shape), a.shape)
    return np.bincount(source.reshape(-1), weights=a.reshape(-1), minlength=n).reshape(shape)


def along(A, t, axis):
    """Apply the matrix A [m, n] along `axis` of t (whose size there is n)."""
    return np.moveaxis(np.tensordot(A, t, axes=([1], [axis])), 0, axis)


def sum_back(signs):
    """The backward of z = Σ σᵢxᵢ: Rᵢ = sum_to(σᵢxᵢ ⊙ R / stab(z), shapeᵢ); one input: sum_to(R, shape)."""

    def back(xs, y, R, eps):
        if len(xs) == 1:
            return [sum_to(R, xs[0].shape)]
        terms = [s * x for s, x in zip(signs, xs)]
        s = divide(R, sum(terms), eps)
        return [sum_to(t * s, x.shape) for t, x in zip(terms, xs)]

    return back


def sum_op(op_type, inputs, out) -> FnOp:
    """Add / Sub / Sum of activations."""
    signs = [-1.0 if op_type == "Sub" and i == 1 else 1.0 for i in range(len(inputs))]
    return FnOp(inputs, out, lambda xs: sum(s * x for s, x in zip(signs, xs)), sum_back(signs))


def max_back(x, R, axes, keepdims):
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


def reduce_max_op(src, out, axes, keepdims) -> FnOp:
    """ReduceMax / GlobalMaxPool over per-sample `axes`: R to each slab's first maximum."""
    fwd = lambda xs: np.max(xs[0], axis=tuple(axes), keepdims=bool(keepdims))
    return FnOp([src], out, fwd, lambda xs, y, R, eps: [max_back(xs[0], R, axes, keepdims)])


def reduce_sum_op(src, out, axes, keepdims) -> FnOp:
    """ReduceSum over per-sample `axes`: R_x = x ⊙ R / stab(y) (broadcast)."""

    def back(xs, y, R, eps):
        Rk, yk = (R, y) if keepdims else (np.expand_dims(R, tuple(axes)), np.expand_dims(y, tuple(axes)))
        return [xs[0] * divide(Rk, yk, eps)]

    return FnOp([src], out, lambda xs: np.sum(xs[0], axis=tuple(axes), keepdims=bool(keepdims)), back)


def maxpool_op(src, out, windows, out_shape) -> FnOp:
    """MaxPool by its windows (layers.maxpool_windows): R to each window's first maximum, summed."""
    winners = lambda x: np.array([w[np.argmax(x[w])] for w in windows])

    def back(xs, y, R, eps):
        R_in = np.zeros(xs[0].size)
        np.add.at(R_in, winners(xs[0].reshape(-1)), R.reshape(-1))
        return [R_in.reshape(xs[0].shape)]

    return FnOp([src], out, lambda xs: np.array([xs[0].reshape(-1)[w].max() for w in windows]).reshape(out_shape), back)


def resize_op(src, out, shape, out_shape, factors, mode, coord, nearest_mode, cubic_a) -> FnOp:
    """y = A x, A_d per resized axis (layers.resize_matrix); nearest: R_x = Aᵀ R, else x ⊙ Aᵀ(R / stab(y))."""
    mats = {
        a: resize_matrix(i, n, f, mode, coord, nearest_mode, cubic_a)
        for a, (i, n, f) in enumerate(zip(shape, out_shape, factors))
        if f != 1.0
    }

    def apply(t, transpose=False):
        for a, A in mats.items():
            t = along(A.T if transpose else A, t, a)
        return t

    def back(xs, y, R, eps):
        return [apply(R, True) if mode == "nearest" else xs[0] * apply(divide(R, y, eps), True)]

    return FnOp([src], out, lambda xs: apply(xs[0]), back)
