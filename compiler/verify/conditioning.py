"""Is a float64 mismatch the graph's fault or the explanation's? The conditioning floor.

A float32 file holds every input and weight rounded to float32, x̃ = x·(1 + δ) with |δ| ≤ u = 2⁻²⁴. An
explanation whose exact value moves by more than the tolerance under perturbations that small cannot be
computed in float32 by any graph, right or wrong. So, only when the float64 check fails, the float64
reference runs TRIALS more times on perturbed inputs and weights and

    floor_i = max_t max_u |R₆₄(x̃ₜ, W̃ₜ)[i, u] − R₆₄(x, W)[i, u]| / max_u |R₆₄(x, W)[i, u]|   (sample i)
    x̃ₜ = x ⊙ (1 + u·Uₜ),   W̃ₜ = W ⊙ (1 + u·U′ₜ),   Uₜ, U′ₜ uniform in [−1, 1] elementwise, seeded

— the check's own metric, for the relevance and each model output alike. Multiplicative noise, not a
rounding to float32: the file's values already are float32 (rounding them again changes nothing), and
noise of rounding's size is what they are uncertain by; zeros stay zero and signs stay. Every float
initializer and Constant is perturbed but those that set a shape (Resize/Upsample scales, Range).

The check is ill-conditioned, not failed, when every sample (and output) over the tolerance has

    error_i ≤ K·floor_i,   K = max(10, 2·√n),   n = the largest fan-in (reduction length) of a weight.

Why K: the floor perturbs the operands once; float32 arithmetic also rounds each partial sum of every
dot product, an error that grows like √n beyond the operands' (blocked and pairwise summation). Measured
at ε = 1e-6, 4 samples each, float32's error over the 2-trial floor: 96 random Gemm–Sigmoid nets (fan-in
32, 128, 512) median 1.2–4.0, maximum 7.3, 19.6, 35 (≤ 1.6·√n); 20 Conv–Sigmoid nets (fan-in 1024,
4096) median 1.6, 1.9, maximum 33, 28 (≤ 1.1·√n). A fixed 10× would call correct graphs wrong. A
graph that computes something else is off by what was changed (1 for a doubled relevance), far beyond
K·floor — unless the floor itself is that large, when float64 cannot tell the two apart either.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..ops import LINEAR_OPS
from .float64 import as_double, evaluate

U = 2.0**-24  # float32's unit roundoff: the largest relative rounding error of a stored value
TRIALS = 2
MIN_FACTOR, PER_ROOT_FAN_IN = 10.0, 2.0
SHAPE_INPUTS = {"Resize": (1, 2), "Upsample": (1,), "Range": (0, 1, 2)}  # float inputs that set a shape


def jitter(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """a·(1 + u·U), U uniform in [−1, 1] per element, in float64."""
    a = np.asarray(a, np.float64)
    return a * (1.0 + U * rng.uniform(-1.0, 1.0, a.shape))


def _shape_setting(graph: onnx.GraphProto) -> set[str]:
    return {node.input[i] for node in graph.node for i in SHAPE_INPUTS.get(node.op_type, ()) if i < len(node.input)}


def perturbed(double: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    """A copy of a float64 model with every float64 initializer and Constant jittered (shapes' kept)."""
    model = onnx.ModelProto()
    model.CopyFrom(double)
    keep = _shape_setting(model.graph)
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.DOUBLE and tensor.name not in keep:
            tensor.CopyFrom(numpy_helper.from_array(jitter(numpy_helper.to_array(tensor), rng), tensor.name))
    for node in model.graph.node:
        if node.op_type == "Constant" and not set(node.output) & keep:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t.data_type == TensorProto.DOUBLE:
                    attribute.t.CopyFrom(numpy_helper.from_array(jitter(numpy_helper.to_array(attribute.t), rng)))
    return model


def perturbed_feeds(feeds: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: jitter(v, rng) if v.dtype.kind == "f" else v for k, v in feeds.items()}


def floors(
    reference: onnx.ModelProto, feeds: dict, want: dict[str, np.ndarray], seed: int, error
) -> dict[str, np.ndarray]:
    """Per tensor in `want`, per sample: the largest `error` (the check's metric) of a perturbed float64
    run against the unperturbed one, over TRIALS seeded perturbations."""
    double, names = as_double(reference), list(want)
    worst = {n: np.zeros(len(want[n])) for n in names}
    for trial in range(TRIALS):
        rng = np.random.default_rng([seed, trial])
        moved = evaluate(perturbed(double, rng), perturbed_feeds(feeds, rng), names)
        worst = {n: np.fmax(worst[n], error(moved[n], want[n])) for n in names}
    return worst


def largest_fan_in(model: onnx.ModelProto) -> int:
    """The longest reduction a weight enters: C_in/g·∏k of a Conv (C_out·∏k transposed), Gemm's inner dim."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    n = 1
    for node in model.graph.node:
        shape = (
            next((weights[i] for i in node.input[:2] if i in weights and len(weights[i]) >= 2), None)
            if node.op_type in LINEAR_OPS
            else None
        )
        if shape is not None:
            size = math.prod(shape)
            n = max(n, size // max(shape[0], 1), size // max(shape[1], 1))
    return n


def factor(model: onnx.ModelProto) -> float:
    """K: how far beyond the floor float32 arithmetic may land on this graph."""
    return max(MIN_FACTOR, PER_ROOT_FAN_IN * math.sqrt(largest_fan_in(model)))


def explained_by_floor(errors: np.ndarray, floor: np.ndarray, tolerance: float, k: float) -> bool:
    """Whether every sample over `tolerance` is within k·floor (a NaN or Inf error never is)."""
    over = ~(errors <= tolerance)
    return bool(np.all(np.isfinite(errors[over]) & (errors[over] <= k * floor[over])))
