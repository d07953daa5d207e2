"""verify's scalar arguments, checked before anything is read, allocated or run.

    samples                 a whole number, 1 ≤ samples ≤ MAX_SAMPLES
    tolerance               finite and > 0 (a NaN would compare false and fail every file; 0 no float32
    conservation_tolerance  result meets; both mean the caller mistyped, not that the file is bad)

How much memory the random inputs may take is inputs.check_input_budget's, since it needs the graph.
"""

from __future__ import annotations

import math
import numbers

from ..errors import LrpcError

# More samples than this is not a check but a batch job: the float64 reference evaluator (numpy) runs
# the digits CNN at about 4 ms a sample and a 224×224 ResNet-18 at 9 s, so 10000 is hours on real models.
MAX_SAMPLES = 10_000


def check_samples(samples) -> None:
    """Refuse a sample count that is not a whole number in 1 … MAX_SAMPLES."""
    whole = isinstance(samples, numbers.Integral) and not isinstance(samples, bool)
    if not whole or not 1 <= samples <= MAX_SAMPLES:
        raise LrpcError(
            f"--samples {samples}: give a whole number from 1 to at most {MAX_SAMPLES} (or your own inputs, --inputs)"
        )


def check_tolerance(value, option: str) -> None:
    """Refuse a tolerance that is not a finite number > 0; `option` names it in the message."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise LrpcError(f"{option} must be a finite number > 0, not {value}")
