"""The float64 check: does the float32 file compute what its graph means, to within `tolerance`?

Per sample i, over every relevance output and model output t (the same metric for both):

    error_i = max_u |t₃₂[i, u] − t₆₄[i, u]| / max_u |t₆₄[i, u]|

t₆₄ is the reference graph (the file's own, or a fresh compile of its source) in double precision,
run by onnx's reference evaluator (verify/float64.py). The check passes when every sample's relevance
error and every output's error is ≤ tolerance.
"""

from __future__ import annotations

import numpy as np

from .float64 import random_ops, run_double
from .report import Check


def per_sample(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def relative_error(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """max|low − high| / max|high| per sample (the denominator kept above 0)."""
    diff = np.abs(per_sample(low) - per_sample(high)).max(1)
    return diff / np.maximum(np.abs(per_sample(high)).max(1), np.finfo(np.float64).tiny)


def compare_float64(reference, feeds, got, output_names, relevance_names, tolerance):
    """(per-sample relevance errors or None, the float64 check)."""
    randomness = random_ops(reference)
    if randomness:
        return None, Check("float64", "skipped", f"the graph draws random numbers ({', '.join(randomness)}), "
                                                 "which no two runtimes draw alike")
    try:
        want = run_double(reference, feeds, output_names + relevance_names)
    except Exception as e:  # an op the reference evaluator lacks
        return None, Check("float64", "skipped", f"the reference evaluator cannot run the graph: "
                                                 f"{str(e).splitlines()[0][:200]}")
    errors = np.max([relative_error(got[n], want[n]) for n in relevance_names], axis=0)
    forward = max(float(relative_error(got[n], want[n]).max()) for n in output_names) if output_names else 0.0
    worst = float(np.nan_to_num(errors, nan=np.inf).max())
    ok = worst <= tolerance and forward <= tolerance
    return errors, Check("float64", "pass" if ok else "fail",
                         f"relevance within {worst:.1e} of float64, outputs within {forward:.1e} "
                         f"(max |difference| / max |value| per sample; tolerance {tolerance:.0e})")
