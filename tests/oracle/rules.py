"""The LRP rules on one linear layer z = W x + b, written on its explicit matrices (see __init__).

A rule maps R_out [n_out] to R_in [n_in] of one flattened sample; `rule(spec)` reads a spec string of
lrpc's grammar (the oracle's own reading, not lrpc's parser); `rule_eps(spec)` is the ε that the
non-linear ops' own divisions (sums, resampling, norms) take under that spec.
"""

from __future__ import annotations

from functools import partial

import numpy as np

EPS = 1e-6
ZBOX_LOW, ZBOX_HIGH = -1.5, 2.0


def pos(a):
    return np.maximum(a, 0.0)


def neg(a):
    return np.minimum(a, 0.0)


def stab(z, eps):
    """z + eps·sign0(z), sign0(0) = +1."""
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def divide(R, z, eps):
    """R / stab(z, eps); eps = 0 (LRP-0): R / z, and 0 where z = 0."""
    if eps == 0.0:
        return np.where(z != 0, R / np.where(z != 0, z, 1.0), 0.0)
    return R / stab(z, eps)


def rule_zero(L, x, R):
    return x * (L.W.T @ divide(R, L.W @ x + L.b, 0.0))


def rule_epsilon(L, x, R, eps=EPS):
    return x * (L.W.T @ divide(R, L.W @ x + L.b, eps))


def rule_alphabeta(L, x, R, alpha, beta, eps=EPS):
    Wp, Wn, xp, xn = pos(L.W), neg(L.W), pos(x), neg(x)
    sa = R / stab(Wp @ xp + Wn @ xn + pos(L.b), eps)
    si = R / stab(Wn @ xp + Wp @ xn + neg(L.b), eps)
    activator = xp * (Wp.T @ sa) + xn * (Wn.T @ sa)
    inhibitor = xp * (Wn.T @ si) + xn * (Wp.T @ si)
    return alpha * activator - beta * inhibitor


def rule_w2(L, x, R, eps=EPS):
    W2 = L.W**2
    return W2.T @ (R / stab(W2 @ np.ones_like(x) + L.b**2, eps))


def rule_flat(L, x, R, eps=EPS):
    return L.S.T @ (R / stab(L.S @ np.ones_like(x), eps))


def rule_gamma(L, x, R, gamma=0.25, eps=EPS):
    W, b, xp, xn = L.W, L.b, pos(x), neg(x)
    z = W @ x + b
    Wgp, Wgn = W + gamma * pos(W), W + gamma * neg(W)
    bgp, bgn = b + gamma * pos(b), b + gamma * neg(b)
    sp = (z > 0) * R / stab(Wgp @ xp + Wgn @ xn + bgp, eps)
    sn = (z < 0) * R / stab(Wgn @ xp + Wgp @ xn + bgn, eps)
    return xp * (Wgp.T @ sp) + xn * (Wgn.T @ sp) + xp * (Wgn.T @ sn) + xn * (Wgp.T @ sn)


def rule_zbox(L, x, R, low, high, eps=EPS):
    W, Wp, Wn = L.W, pos(L.W), neg(L.W)
    lo, hi = np.full_like(x, low), np.full_like(x, high)
    s = R / stab(W @ x - Wp @ lo - Wn @ hi, eps)
    return x * (W.T @ s) - lo * (Wp.T @ s) - hi * (Wn.T @ s)


RULES = {  # the rules under lrpc's spec strings
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


def rule(spec):
    """The rule function of a spec: RULES[spec], any "zbox:low=L,high=H", or `spec` itself if callable."""
    if callable(spec):
        return spec
    if spec not in RULES and spec.startswith("zbox:"):
        bounds = dict(kv.split("=") for kv in spec.split(":", 1)[1].split(","))
        return partial(rule_zbox, low=float(bounds["low"]), high=float(bounds["high"]))
    return RULES[spec]


def rule_eps(spec) -> float:
    """The ε of the divisions outside linear layers: 0 for "zero", the given one of "epsilon:eps=…", else EPS."""
    if spec == "zero":
        return 0.0
    return float(spec.split("=")[1]) if isinstance(spec, str) and spec.startswith("epsilon:eps=") else EPS
