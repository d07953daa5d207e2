"""The one driver of the oracle: a network is a DagNet (ops in topological order, values by name);
forward pass, start relevance, the reverse walk that sums the relevance a value receives from its
readers, the float32 sensitivity κ of an explanation, and the choice of well-conditioned inputs.

A rule spec for the walk is one of: a spec string of rules.RULES for every op; "RULE;first=RULE1"
(lrpc's rule_map ["first=RULE1"]: the first linear op takes RULE1); a rule function (chain tests on
hand-made rules); or (default, {op output: spec}) — the fuzz judge's composite assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .layers import Linear
from .ops import LinearOp
from .rules import ZBOX_HIGH, ZBOX_LOW

NOISE = 1e-7  # relative size of the float32 errors `sensitivity` simulates (about float32's unit roundoff)
SENSITIVITY_LIMIT = 1e-6  # a tenth of the tests' tolerance 1e-5


@dataclass
class DagNet:
    ops: list
    input_name: str
    input_shape: tuple
    shapes: dict  # per-sample shape of every value
    outputs: list  # graph output names
    stripped: dict = field(default_factory=dict)  # output-activation value → its input (the logits)
    exp_minus_one: dict = field(default_factory=dict)  # Selu/Elu output → its scale on x < 0 (see sensitivity)


def explained(net: DagNet, name=None) -> str:
    """The value relevance starts at when `name` (None: the first output) is explained; an output
    activation is stripped."""
    name = net.outputs[0] if name is None else name
    return net.stripped.get(name, name)


def forward(net: DagNet, x, noise=None) -> dict:
    """Every value of one sample, by name; noise(op, inputs, output), if given, perturbs each output."""
    values = {net.input_name: np.asarray(x, np.float64).reshape(net.input_shape)}
    for op in net.ops:
        xs = [values[n] for n in op.inputs]
        y = op.forward(xs)
        values[op.output] = y if noise is None else noise(op, xs, y)
    return values


def flat_target(y, target) -> int:
    """The flat index of a one-hot target: None the first largest unit, an int, or a multi-index tuple."""
    if target is None:
        return int(np.argmax(y))
    return int(np.ravel_multi_index(target, y.shape)) if isinstance(target, tuple) else int(target)


def start_relevance(y, target):
    """R₀: onehot ⊙ y (one-hot targets as flat_target), y (target "all"), or mask ⊙ y (an array of y's shape)."""
    if isinstance(target, str) and target == "all":
        return y.copy()
    if isinstance(target, np.ndarray) and target.shape == y.shape:
        return target * y
    t = flat_target(y, target)
    return np.where(np.arange(y.size) == t, y.reshape(-1), 0.0).reshape(y.shape)


def rule_map(net: DagNet, spec):
    """(default spec, {op output: spec}) of a rule spec (see the module docstring)."""
    if isinstance(spec, tuple):
        return spec
    if not isinstance(spec, str):
        return spec, {}
    default, _, first = spec.partition(";first=")
    linear = [op.output for op in net.ops if isinstance(op, LinearOp)]
    return default, ({linear[0]: first} if first else {})


def explain_sample(net: DagNet, x, spec, tensor=None, target=None, noise=None):
    """(values of all tensors, R at the input) for one sample; relevance starts at `tensor`."""
    values = forward(net, x, noise)
    start = explained(net, tensor)
    default, specs = rule_map(net, spec)
    rel = {start: start_relevance(values[start], target)}
    for op in reversed(net.ops):
        if op.output in rel:
            xs, R = [values[n] for n in op.inputs], rel.pop(op.output)
            for name, r in zip(op.inputs, op.relevance(xs, values[op.output], R, specs.get(op.output, default))):
                rel[name] = rel[name] + r if name in rel else r
    return values, rel.get(net.input_name, np.zeros(net.input_shape)).reshape(np.shape(x))


def per_sample(target, n):
    """The target of sample n: an array [N, ...] (per-sample classes or masks) gives its row n, any other
    target is shared."""
    return target[n] if isinstance(target, np.ndarray) and target.ndim > 0 else target


def explain(net: DagNet, X, spec, tensor=None, target=None):
    """(values of the explained tensor [N, ...], R [N, *input]) of a batch."""
    X = np.asarray(X, np.float64)
    pairs = [explain_sample(net, x, spec, tensor, per_sample(target, n)) for n, x in enumerate(X)]
    return np.stack([p[0][explained(net, tensor)] for p in pairs]), np.stack([p[1] for p in pairs])


def relative(a, b) -> float:
    """‖b − a‖ / ‖a‖ (a = 0: whether b ≠ 0)."""
    den = np.linalg.norm(a)
    return float(np.linalg.norm(b - a) / den) if den > 0 else float(np.linalg.norm(b) > 0)


def perturbed_pair(net: DagNet, x, spec, tensor=None, target=None, rel=NOISE, seed=0):
    """(values, R) of one sample, exact and with float32-sized errors: every weight, bias and input
    × (1 + rel·ξ), and Selu/Elu outputs on x < 0 shifted by rel·γα·ξ (onnxruntime computes them as
    exp(x) − 1 in float32, which loses 1e-3 of the value at x = −1e-5, and LRP divides that value by the
    preceding layer's own z; on the SELU autoencoder this alone moves R by ~1e-5 where the weight noise
    predicts 4e-7). By backward error analysis a float32 dot product is the exact one of slightly
    perturbed operands, so the pair shows how much float32 arithmetic alone can move the explanation."""
    rng = np.random.default_rng(seed)
    jitter = lambda v: v * (1.0 + rel * rng.standard_normal(np.shape(v)))

    def noise(op, xs, y):
        scale = net.exp_minus_one.get(op.output)
        return y if scale is None else y + (xs[0] < 0) * rel * scale * rng.standard_normal(y.shape)

    def noisy(op):
        L = op.L
        return replace(op, L=Linear(jitter(L.W), jitter(L.b), L.S, L.in_shape, L.out_shape))

    noisy_net = replace(net, ops=[noisy(op) if isinstance(op, LinearOp) else op for op in net.ops])
    exact = explain_sample(net, x, spec, tensor, target)
    return exact, explain_sample(noisy_net, jitter(np.asarray(x, np.float64)), spec, tensor, target, noise)


def sensitivity(net: DagNet, x, spec, tensor=None, target=None, rel=NOISE, seed=0) -> float:
    """κ: the relative change of R between the two runs of perturbed_pair."""
    (_, R), (_, R2) = perturbed_pair(net, x, spec, tensor, target, rel, seed)
    return relative(R, R2)


def sample_inputs(spec, shape, seed):
    """float32 inputs: standard normal (negative values occur), or uniform in [ZBOX_LOW, ZBOX_HIGH]
    where a zbox rule is used."""
    rng = np.random.default_rng(seed)
    if isinstance(spec, str) and "zbox" in spec:
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


def pick_inputs(net: DagNet, spec, tensor=None, batch=3, target=None, seed=11, limit=SENSITIVITY_LIMIT):
    """`batch` inputs of sample_inputs' distribution whose explained unit is well conditioned in float32
    (well_conditioned, for one-hot targets) and whose explanation moves by at most `limit` (a tenth of
    the tests' 1e-5) under `sensitivity`, so that comparing float32 with float64 at 1e-5 tests the rules,
    not float32 cancellation. target: as start_relevance, "min" (each sample's smallest unit), or one
    per sample ([batch] classes, [batch, *units] masks). Deterministic."""
    chosen, k = [], 0
    while len(chosen) < batch:
        assert k < 50, "no well-conditioned inputs found"
        for x in sample_inputs(spec, (4 * batch, *net.input_shape), seed + 1000 * k):
            if len(chosen) == batch:
                break
            t = per_sample(target, len(chosen))
            y = forward(net, x)[explained(net, tensor)]
            t = int(np.argmin(y)) if isinstance(t, str) and t == "min" else t
            one_hot = not isinstance(t, (str, np.ndarray))
            if one_hot and not well_conditioned(y.reshape(1, -1), None if t is None else flat_target(y, t))[0]:
                continue
            if sensitivity(net, x, spec, tensor, t) <= limit:
                chosen.append(x)
        k += 1
    return np.stack(chosen)
