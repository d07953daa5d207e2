"""`lrpc verify`: can this explained file be trusted? Three checks on random (or given) inputs.

1. finite      no NaN or Inf in any output or relevance map (onnxruntime, float32, as deployed).
2. float64     the float32 results agree with a float64 reference within `tolerance`, per sample:
               max|R₃₂ − R₆₄| / max|R₆₄| (and the same for each model output; compare.py). The
               reference is the file's own graph in double precision (float64.py) — this catches
               numerical trouble, not a wrong rule — or, with `source`, a fresh compile of the source
               model with the options the file records, whose metadata then says what the outputs mean
               (source.py): this catches any edit of the file. A miss that float32 rounding of the
               inputs and weights alone explains is ILL-CONDITIONED, not FAILED (conditioning.py,
               advice.py); neither is a pass.
3. conservation  Σ relevance / start relevance S₀ per sample (conservation.py): judged only where LRP
               conserves exactly, reported elsewhere.

    report = lrpc.verify("explained.onnx")                    # random inputs
    report = lrpc.verify("explained.onnx", source="model.onnx", inputs=x)
    print(report.text()); assert report.passed

The other modules: arguments.py checks the arguments, load.py reads the file and its metadata,
inputs.py draws the inputs, float32.py runs the file in onnxruntime, float64.py (with
reference_maxpool.py and reference_pad.py, two ops onnx's evaluator gets wrong) runs the reference,
quantized.py what it runs of a QDQ file (the deployed quantizers' integers, the rest in float64),
report.py holds and prints the result.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx

from lrpc_runtime.metadata import KEY_CONVENTION, KEY_EXPLAINED, KEY_RELEVANCE, KEY_RULE, KEY_TARGET, KEY_VERSION

from .arguments import check_samples, check_tolerance
from .compare import compare_float64, per_sample
from .conservation import check_conservation, conserving
from .float32 import run_float32
from .inputs import check_input_budget, make_feeds
from .load import load, lrpc_metadata
from .quantized import activation_quantizers, forced, in_reference_types
from .report import Check, VerifyReport
from .source import lacking, reference

__all__ = ["verify", "VerifyReport", "Check", "conserving"]


def verify(
    model: str | os.PathLike | bytes | onnx.ModelProto,
    *,
    source: str | os.PathLike | bytes | None = None,
    inputs: np.ndarray | dict[str, np.ndarray] | None = None,
    samples: int = 4,
    seed: int = 0,
    tolerance: float = 1e-3,
    conservation_tolerance: float = 1e-3,
    name: str | None = None,
) -> VerifyReport:
    """Check an explained file (path, bytes or ModelProto); see the module docstring for the checks.

    inputs: an array for the explained input (or a dict by input name); else `samples` random ones.
    source: the source model (path or bytes): the float64 reference becomes a fresh compile of it.
    name:   what the report calls the file (default: its path).

    >>> report = verify("digits_explained.onnx", source="models/digits_cnn.onnx", samples=8)  # doctest: +SKIP
    >>> report.passed, [check.status for check in report.checks]   # doctest: +SKIP
    (True, ['pass', 'pass', 'pass', 'info'])
    >>> report.rows[0]                                             # doctest: +SKIP
    {'sample': 0, 'start': 11.48..., 'relevance_sum': 10.15..., 'ratio': 0.884..., 'error': 4.2e-07, 'finite': True}
    """
    check_samples(samples)
    check_tolerance(tolerance, "--tolerance")
    check_tolerance(conservation_tolerance, "conservation_tolerance")
    proto, where = load(model)
    meta = lrpc_metadata(proto, name or where)
    if inputs is None:
        check_input_budget(proto, samples)
    ref = reference(proto, meta, source)
    meaning = ref.meta  # with a source, the fresh compile's: what the outputs mean
    header = [
        f"verify {name or where}: {meaning.get(KEY_RULE)}, target {meaning[KEY_TARGET]}, convention "
        f"{meaning.get(KEY_CONVENTION, 'lrpc')} (lrpc {meta.get(KEY_VERSION, '?')})"
    ]
    absent = lacking(proto, ref.model or proto, meaning)
    if absent:
        missing = Check(
            "float64",
            "fail",
            f"the file has no {', '.join(absent)}, which a fresh compile of the source has: not comparable",
        )
        return VerifyReport(header, [], [*ref.checks, missing])
    feeds, what = make_feeds(proto, meaning, inputs, samples, np.random.default_rng(seed))
    header += [f"inputs: {what.format(seed=seed)}", f"float64 reference: {ref.described}"]
    relevance_names = list(json.loads(meaning[KEY_RELEVANCE]).values())
    output_names = [o.name for o in (ref.model or proto).graph.output if o.name not in relevance_names]
    reference_model = ref.model or proto
    quantizers = activation_quantizers(reference_model, proto)
    got = run_float32(proto, feeds, meaning[KEY_EXPLAINED], quantizers)
    relevance = np.concatenate([per_sample(got[n]) for n in relevance_names], axis=1)
    finite = np.array(
        [
            all(np.isfinite(per_sample(got[n])[i]).all() for n in output_names + relevance_names)
            for i in range(len(relevance))
        ]
    )
    checks = [_finite_check(finite), *ref.checks]
    errors = None
    if ref.model is not None:
        integers = in_reference_types(ref.model, proto, {name: got[name] for name in quantizers})  # deployed ones
        errors, float64_check = compare_float64(
            forced(ref.model, integers),
            {**feeds, **integers},
            got,
            output_names,
            relevance_names,
            tolerance,
            meaning,
            seed,
        )
        checks.append(float64_check)
    ratios, start, conservation = check_conservation(
        proto, meaning, feeds, got[meaning[KEY_EXPLAINED]], relevance, conservation_tolerance
    )
    checks.append(conservation)
    return VerifyReport(header, _rows(relevance, start, ratios, errors, finite), checks)


def _finite_check(finite: np.ndarray) -> Check:
    return Check(
        "finite",
        "pass" if finite.all() else "fail",
        "no NaN or Inf in the outputs and relevance"
        if finite.all()
        else f"NaN or Inf in sample(s) {np.flatnonzero(~finite).tolist()}",
    )


def _rows(relevance, start, ratios, errors, finite) -> list[dict]:
    """One row per sample: S₀, Σ relevance, their ratio, the float64 error, finite or not."""
    pick = lambda values, i: None if values is None else float(values[i])
    return [
        {
            "sample": i,
            "start": pick(start, i),
            "relevance_sum": float(relevance[i].sum()),
            "ratio": pick(ratios, i),
            "error": pick(errors, i),
            "finite": bool(finite[i]),
        }
        for i in range(len(relevance))
    ]
