"""The float64 check: does the float32 file compute what its graph means, to within `tolerance`?

Per sample i, over every relevance output and model output t (the same metric for both):

    error_i = max_u |t₃₂[i, u] − t₆₄[i, u]| / max_u |t₆₄[i, u]|

t₆₄ is the reference graph (the file's own, or a fresh compile of its source) in double precision,
run by onnx's reference evaluator (verify/float64.py). The check passes when every sample's relevance
error and every output's error is ≤ tolerance. When it does not, conditioning.py measures how far float32
rounding of the inputs and weights alone moves t₆₄: within its factor of that, the check is
ill-conditioned (float32 cannot resolve this explanation), else it fails (the float32 graph is off by
more than its conditioning explains).
"""

from __future__ import annotations

import numpy as np

from .advice import eps_hint
from .conditioning import explained_by_floor, factor, floors, largest_fan_in
from .float64 import random_ops, run_double
from .report import Check


def per_sample(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def relative_error(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """max|low − high| / max|high| per sample (the denominator kept above 0)."""
    diff = np.abs(per_sample(low) - per_sample(high)).max(1)
    return diff / np.maximum(np.abs(per_sample(high)).max(1), np.finfo(np.float64).tiny)


def compare_float64(reference, feeds, got, output_names, relevance_names, tolerance, meta, seed):
    """(per-sample relevance errors or None, the float64 check)."""
    randomness = random_ops(reference)
    if randomness:
        return None, Check(
            "float64",
            "skipped",
            f"the graph draws random numbers ({', '.join(randomness)}), which no two runtimes draw alike",
        )
    try:
        want = run_double(reference, feeds, output_names + relevance_names)
    except Exception as e:  # an op the reference evaluator lacks
        return None, Check(
            "float64", "skipped", f"the reference evaluator cannot run the graph: {str(e).splitlines()[0][:200]}"
        )
    groups = {"relevance": relevance_names, **{f"output '{n}'": [n] for n in output_names}}
    errors = {g: np.max([relative_error(got[n], want[n]) for n in names], axis=0) for g, names in groups.items()}
    worst = lambda g: float(np.nan_to_num(errors[g], nan=np.inf).max())
    forward = max((worst(g) for g in errors if g != "relevance"), default=0.0)
    summary = (
        f"relevance within {worst('relevance'):.1e} of float64, outputs within {forward:.1e} "
        f"(max |difference| / max |value| per sample; tolerance {tolerance:.0e})"
    )
    if worst("relevance") <= tolerance and forward <= tolerance:
        return errors["relevance"], Check("float64", "pass", summary)
    return errors["relevance"], judge(reference, feeds, want, groups, errors, tolerance, meta, seed, summary)


def judge(reference, feeds, want, groups, errors, tolerance, meta, seed, summary) -> Check:
    """The failing float64 check, ill-conditioned or failed by the conditioning floor (conditioning.py)."""
    try:
        moved = floors(reference, feeds, want, seed, relative_error)
    except Exception as e:  # the perturbed run failing is no evidence either way: the failure stands
        return Check(
            "float64",
            "fail",
            f"{summary}; the conditioning floor could not be measured ({str(e).splitlines()[0][:200]})",
        )
    floor = {g: np.max([moved[n] for n in names], axis=0) for g, names in groups.items()}
    k, n = factor(reference), largest_fan_in(reference)
    group, i = _worst_failure(errors, tolerance)
    numbers = (
        f"perturbing inputs and weights by float32 rounding alone moves the float64 {group} by {floor[group][i]:.1e}"
    )
    if all(explained_by_floor(errors[g], floor[g], tolerance, k) for g in groups):
        verdict = (
            f"ILL-CONDITIONED: float32 cannot resolve this explanation: {numbers} (lrpc's float32 is "
            f"{errors[group][i]:.1e} away)"
        )
        hint = eps_hint(meta)
        detail = (
            f"{summary}; {numbers} in sample {i}, and every sample off is within {k:.0f}× that "
            f"(K = max(10, 2√n), n = {n} the largest fan-in): ill-conditioned, not a wrong graph"
        )
        return Check("float64", "ill-conditioned", detail, verdict + (f"; {hint}" if hint else ""))
    return Check(
        "float64",
        "fail",
        f"{summary}; the float32 graph is off by more than its conditioning explains: "
        f"{numbers} in sample {i}, and float32 arithmetic explains at most {k:.0f}× that",
    )


def _worst_failure(errors: dict[str, np.ndarray], tolerance: float) -> tuple[str, int]:
    """(group, sample) of the largest error over the tolerance (NaN counted as the largest)."""
    group = max(errors, key=lambda g: float(np.nan_to_num(errors[g], nan=np.inf).max()))
    return group, int(np.argmax(np.nan_to_num(errors[group], nan=np.inf)))
