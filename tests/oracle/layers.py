"""Explicit matrices of the linear layers, built by index loops (no lrpc, no onnxruntime).

A sample's tensor is flattened row-major to a vector (C, spatial...); a linear layer is the affine map
z = W x + b, W [n_out, n_in], and S (W's shape) its 0/1 connectivity (the matrix with all weights 1).
Tap kk of output position o reads input position i = o·stride − pad_begin + kk·dilation (per axis); a
tap that lands in the padding has no column (padding is zero).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


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


def diagonal(s, t, shape) -> Linear:
    """The elementwise affine a ↦ s⊙a + t as a layer of its own (W = diag(s), bias t)."""
    return Linear(np.diag(s), t, np.eye(s.size), tuple(shape), tuple(shape))


def compose_after(L: Linear, s, t) -> Linear:
    """a ↦ s⊙a + t applied to L's output: W' = diag(s) W, b' = s⊙b + t."""
    return Linear(s[:, None] * L.W, s * L.b + t, L.S, L.in_shape, L.out_shape)


def compose_before(L: Linear, s, t) -> Linear:
    """a ↦ s⊙a + t applied to L's input: W' = W diag(s), b' = b + W t."""
    return Linear(L.W * s[None, :], L.b + L.W @ t, L.S, L.in_shape, L.out_shape)


def reads_padding(L: Linear) -> bool:
    """Whether some output has fewer taps than another (a tap fell into the padding)."""
    taps = L.S.sum(axis=1)
    return bool(np.any(taps != taps.max()))


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
    b = np.zeros(T * m) if bias is None else np.tile(np.asarray(bias, np.float64).reshape(-1), T)
    return Linear(np.kron(np.eye(T), M.T), b, np.kron(np.eye(T), np.ones((m, k))), (*lead, k), (*lead, m))


def same_pads(in_size, kernel, strides, dilations, mode):
    """Explicit pads [begins..., ends...] of auto_pad SAME_UPPER / SAME_LOWER (ONNX definition)."""
    begins, ends = [], []
    for i, k, s, d in zip(in_size, kernel, strides, dilations):
        total = max(0, (-(-i // s) - 1) * s + (k - 1) * d + 1 - i)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends


def _geometry(spatial, kernel, strides, pads, dilations):
    """(strides, pads, dilations, out_spatial) of a floor-mode window op, defaults filled in."""
    nd = len(kernel)
    strides, dilations = list(strides or [1] * nd), list(dilations or [1] * nd)
    pads = list(pads or [0] * 2 * nd)
    out = [
        (spatial[a] + pads[a] + pads[nd + a] - dilations[a] * (kernel[a] - 1) - 1) // strides[a] + 1 for a in range(nd)
    ]
    return strides, pads, dilations, out


def _taps(o, kernel, strides, pads, dilations):
    """(kk, i) for each tap kk (row-major) of output position o: the input position it reads."""
    for kk in itertools.product(*map(range, kernel)):
        yield kk, [o[a] * strides[a] - pads[a] + kk[a] * dilations[a] for a in range(len(kernel))]


def _inside(i, spatial, low=None):
    return all((0 if low is None else low[a]) <= i[a] < spatial[a] for a in range(len(i)))


def conv_layer(w, bias, in_shape, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET"):
    """Conv weight w [M, C/group, *k] on a sample of shape in_shape = (C, *spatial), as W [n_out, n_in]:
    row (m, o) and column (c, i) are connected by tap kk when c is in m's group (c_local = c − g·C/group)."""
    w = np.asarray(w, np.float64)
    M, cpg, *kernel = w.shape
    C, *spatial = in_shape
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(spatial, kernel, strides or [1] * len(kernel), dilations or [1] * len(kernel), auto_pad)
    elif auto_pad == "VALID":
        pads = None
    assert C == cpg * group and M % group == 0
    strides, pads, dilations, out_spatial = _geometry(spatial, kernel, strides, pads, dilations)
    out_shape = (M, *out_spatial)
    W = np.zeros((int(np.prod(out_shape)), int(np.prod(in_shape))))
    S = np.zeros_like(W)
    for m, o in itertools.product(range(M), itertools.product(*map(range, out_spatial))):
        row = np.ravel_multi_index((m, *o), out_shape)
        for c_local in range(cpg):
            c = m // (M // group) * cpg + c_local
            for kk, i in _taps(o, kernel, strides, pads, dilations):
                if _inside(i, spatial):
                    col = np.ravel_multi_index((c, *i), in_shape)
                    W[row, col] += w[(m, c_local, *kk)]
                    S[row, col] += 1.0
    b = np.zeros(M) if bias is None else np.asarray(bias, np.float64)
    return Linear(W, np.repeat(b, int(np.prod(out_spatial))), S, tuple(in_shape), out_shape)


def _transpose_pads(spatial, kernel, strides, pads, extra, dilations, output_shape, auto_pad):
    """(pads, output_padding) of a ConvTranspose given output_shape or auto_pad SAME_* (output = in·stride):
    total = stride·(in−1) + output_padding + (k−1)·dilation + 1 − output; SAME_UPPER pads total//2 at the
    start, the others total − total//2; a negative total extends the end (onnxruntime's behaviour)."""
    nd = len(kernel)
    target = output_shape or [spatial[a] * strides[a] for a in range(nd)]
    for a in range(nd):
        total = strides[a] * (spatial[a] - 1) + extra[a] + (kernel[a] - 1) * dilations[a] + 1 - target[a]
        first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        pads[a], pads[nd + a] = (first, total - first) if total >= 0 else (0, 0)
        extra[a] += max(-total, 0)
    return pads, extra


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
    o = i·stride − pad_begin + kk·dilation."""
    w = np.asarray(w, np.float64)
    C, mpg, *kernel = w.shape
    _, *spatial = in_shape
    nd, M = len(kernel), mpg * group
    strides, dilations = list(strides or [1] * nd), list(dilations or [1] * nd)
    extra, pads = list(output_padding or [0] * nd), list(pads or [0] * 2 * nd)
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads, extra = _transpose_pads(spatial, kernel, strides, pads, extra, dilations, output_shape, auto_pad)
    out_spatial = [
        strides[a] * (spatial[a] - 1) + extra[a] + (kernel[a] - 1) * dilations[a] + 1 - pads[a] - pads[nd + a]
        for a in range(nd)
    ]
    out_shape = (M, *out_spatial)
    W = np.zeros((int(np.prod(out_shape)), int(np.prod(in_shape))))
    S = np.zeros_like(W)
    for c, i in itertools.product(range(C), itertools.product(*map(range, spatial))):
        col = np.ravel_multi_index((c, *i), in_shape)
        for m_local in range(mpg):
            for kk, o in _taps(i, kernel, strides, pads, dilations):
                if _inside(o, out_spatial):
                    row = np.ravel_multi_index((c // (C // group) * mpg + m_local, *o), out_shape)
                    W[row, col] += w[(c, m_local, *kk)]
                    S[row, col] += 1.0
    b = np.zeros(M) if bias is None else np.asarray(bias, np.float64)
    return Linear(W, np.repeat(b, int(np.prod(out_spatial))), S, tuple(in_shape), out_shape)


def maxpool_windows(in_shape, kernel, strides=None, pads=None, dilations=None):
    """(windows, out_shape): windows[o] the flat input indices of output o's window, valid taps in
    row-major order (padded positions never win: they are −inf)."""
    C, *spatial = in_shape
    strides, pads, dilations, out_spatial = _geometry(spatial, kernel, strides, pads, dilations)
    windows = []
    for c, o in itertools.product(range(C), itertools.product(*map(range, out_spatial))):
        taps = [i for _, i in _taps(o, kernel, strides, pads, dilations) if _inside(i, spatial)]
        windows.append(np.array([np.ravel_multi_index((c, *i), in_shape) for i in taps]))
    return windows, (C, *out_spatial)


def avgpool_layer(shape, kernel, strides, pads, include_pad, out_spatial, dilations):
    """(depthwise Linear with weights 1/K, per-output factor K/n(o)) of an AveragePool with explicit pads
    (ceil mode's extra outputs reached by extending the end pads); n(o) is the divisor, counted tap by tap."""
    C, *spatial = shape
    nd, K = len(kernel), int(np.prod(kernel))
    conv_pads = list(pads)
    for a in range(nd):  # extend the end pads so that a floor-mode conv reaches out_spatial
        need = (
            (out_spatial[a] - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1 - spatial[a] - pads[a] - pads[nd + a]
        )
        conv_pads[nd + a] += max(need, 0)
    L = conv_layer(np.full([C, 1, *kernel], 1.0 / K), None, shape, strides, conv_pads, dilations, group=C)
    low = [-pads[a] if include_pad else 0 for a in range(nd)]
    high = [spatial[a] + pads[nd + a] if include_pad else spatial[a] for a in range(nd)]
    divisor = np.zeros(L.out_shape)
    for c, o in itertools.product(range(C), itertools.product(*map(range, out_spatial))):
        divisor[(c, *o)] = sum(_inside(i, high, low) for _, i in _taps(o, kernel, strides, pads, dilations))
    return L, np.where(divisor > 0, K / np.maximum(divisor, 1), 0.0).reshape(-1)


def mean_layer(shape, keepdims=True, channels_last=False) -> Linear:
    """The mean over the positions of each channel (GlobalAveragePool, spatial ReduceMean) as a depthwise
    Linear 1/K: channels first (C, *spatial) or last (*spatial, C)."""
    if not channels_last:
        L = conv_layer(np.full([shape[0], 1, *shape[1:]], 1.0 / np.prod(shape[1:])), None, shape, group=shape[0])
        return L if keepdims else Linear(L.W, L.b, L.S, L.in_shape, (shape[0],))
    C, K = shape[-1], int(np.prod(shape[:-1]))
    W = np.kron(np.full((1, K), 1.0 / K), np.eye(C))  # columns in (position, channel) order
    out = (*[1] * (len(shape) - 1), C) if keepdims else (C,)
    return Linear(W, np.zeros(C), (W != 0).astype(float), tuple(shape), out)


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
            rounding = {
                "round_prefer_floor": lambda v: math.ceil(v - 0.5),
                "round_prefer_ceil": lambda v: math.floor(v + 0.5),
                "floor": math.floor,
                "ceil": math.ceil,
            }
            A[o, clamp(rounding[nearest_mode](xo))] = 1.0
        elif mode == "linear":
            xc = min(max(xo, 0.0), n_in - 1.0)
            i0 = math.floor(xc)
            A[o, clamp(i0)] += 1.0 - (xc - i0)
            A[o, clamp(i0 + 1)] += xc - i0
        else:  # cubic: Keys kernel with parameter a over the taps i0 − 1 … i0 + 2
            i0, a = math.floor(xo), cubic_a
            for tap in range(-1, 3):
                d = abs(xo - (i0 + tap))
                c = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
                A[o, clamp(i0 + tap)] += c
    return A
