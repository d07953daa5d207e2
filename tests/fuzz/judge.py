"""How the fuzz tests judge a compiled model: the float64 DAG oracle under lrpc's rule assignment,
float32 conditioning, conservation, a hard per-example deadline and the hypothesis budget.

Rules and composites fuzzed (SPECS): one rule on every linear layer, or a composite that the oracle
assigns as lrpc's rules/assign.py does — average pools (canonized to depthwise convs, the oracle's
"/depthwise" Linear and GlobalAveragePool's) take ε; the first non-pool linear layer (the generator
puts a conv or dense layer first, on the input) takes the composite's first rule; other Conv layers
the conv rule, Gemm/MatMul the dense rule; the residual Add's split uses ε = 1e-6 (the default rule's).

Agreement: per sample, ‖R_lrpc − R_oracle‖₂ / ‖R_oracle‖₂ ≤ max(1e-4, 10·κ, 3·ν), where
- κ is the relative change of the oracle's R when every weight, bias and input is perturbed by 1e-7
  relative noise (float32's roundoff; oracle.dag.perturbed_pair, with the composite's rule map):
  how much the exact answer depends on float32-sized changes of the model;
- ν is the relative change of lrpc's own float32 R when the input moves by one ulp: the rounding noise of
  the explained graph's arithmetic. κ misses noise that arises inside that arithmetic: zᴮ on a hidden
  layer computes z = Wx − W⁺l − W⁻h, whose terms cancel when x leaves [l, h], and there a 1-ulp input
  change moved lrpc's R by 3.5e-3–8.4e-3 while the exact R moved by 3e-5 (κ = 1e-4, measured on the
  residual graph this was found on). A wrong rule is a reproducible offset, not noise: still caught
  unless it hides below 3·ν.
Samples with κ or ν > 1e-3, or whose explained logit is itself ill-conditioned in float32
(oracle.well_conditioned), are only checked for finiteness: float32 cannot be held to float64 there. The model's
outputs are compared likewise, at max(1e-5, 10·κ_out) (a logit that cancels loses digits in float32).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from contextlib import contextmanager

import numpy as np
from hypothesis import HealthCheck, settings

import oracle
from oracle import dag
from oracle.ops import LinearOp

ZBOX = f"zbox:low={oracle.ZBOX_LOW:g},high={oracle.ZBOX_HIGH:g}"
GAMMA_BOX = "EpsilonGammaBox:low=-1,high=1"
SPECS = [
    "zero",
    "epsilon",
    "zplus",
    "alpha1beta0",
    "alpha2beta1",
    "flat",
    "w2",
    "gamma",
    ZBOX,
    "composite:EpsilonPlusFlat",
    f"composite:{GAMMA_BOX}",
]
COMPOSITES = {  # class → oracle rule, as rules/assign.py's table
    "EpsilonPlusFlat": {"pool": "epsilon", "first": "flat", "conv": "zplus", "dense": "epsilon"},
    GAMMA_BOX: {"pool": "epsilon", "first": "zbox:low=-1,high=1", "conv": "gamma", "dense": "epsilon"},
}
INPUT_RANGE = {ZBOX: (oracle.ZBOX_LOW, oracle.ZBOX_HIGH), f"composite:{GAMMA_BOX}": (-1.0, 1.0)}
ILL = 1e-3  # κ or ν above which a sample is not compared
TALLY: Counter = Counter()  # what happened, for LRPC_FUZZ_STATS (tests/fuzz/conftest.py)


def examples(default: int) -> int:
    """The hypothesis budget: LRPC_FUZZ_EXAMPLES if set, else `default` (sized for ≤ 60 s on 2 cores)."""
    return int(os.environ.get("LRPC_FUZZ_EXAMPLES", default))


def fuzz_settings(default_examples: int, fraction: int = 1):
    """examples(default_examples) // fraction (at least 4) examples, reproducible (derandomized, no example
    database), no hypothesis deadline: deadline() is the hard one."""
    return settings(
        max_examples=max(4, examples(default_examples) // fraction),
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


class Hang(BaseException):
    """Raised by deadline(); a BaseException, so that no `except Exception` in lrpc can swallow it."""


@contextmanager
def deadline(seconds: float, what: str):
    def expire(signum, frame):
        raise Hang(f"{what} did not finish in {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def compile_kwargs(spec: str) -> dict:
    return {"composite": spec.split(":", 1)[1]} if spec.startswith("composite:") else {"rule": spec}


def inputs(spec: str, shape: tuple, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if spec in INPUT_RANGE:
        return rng.uniform(*INPUT_RANGE[spec], (count, *shape)).astype(np.float32)
    return rng.standard_normal((count, *shape)).astype(np.float32)


def rule_map(net, model, spec: str) -> tuple[str, dict]:
    """(the rule of non-linear ops, {LinearOp output: oracle rule spec}) for `spec` on `net`."""
    producer = {n.output[0]: n.op_type for n in model.graph.node}
    classes = {}
    for op in net.ops:
        if isinstance(op, LinearOp):
            kind = producer.get(op.output, "AveragePool")  # "<avgpool>/depthwise" is no ONNX value
            classes[op.output] = (
                "pool" if kind in ("AveragePool", "GlobalAveragePool") else "conv" if kind == "Conv" else "dense"
            )
    if not spec.startswith("composite:"):
        return spec, {name: spec for name in classes}
    table = COMPOSITES[spec.split(":", 1)[1]]
    first = next((name for name, c in classes.items() if c != "pool"), None)
    return "epsilon", {name: table["first" if name == first else c] for name, c in classes.items()}


def sensitivity(net, x, default, rules, rel=1e-7, seed=0) -> tuple[float, float]:
    """(κ of R, κ of the model outputs): their relative change under relative noise `rel` on weights,
    biases and x (dag.perturbed_pair; see the module docstring)."""
    (values, R), (values2, R2) = dag.perturbed_pair(net, x, (default, rules), None, None, rel, seed)
    return dag.relative(R, R2), max(dag.relative(values[o], values2[o]) for o in net.outputs)


def relevance_tolerance(kappa, nu) -> float | None:
    """max(1e-4, 10·κ, 3·ν), or None where κ (None: the logit is ill-conditioned) or ν exceeds ILL."""
    if kappa is None or kappa > ILL or nu > ILL:
        return None
    return max(1e-4, 10 * kappa, 3 * nu)


def judged(net, X, default, rules):
    """Per sample: (oracle R, oracle outputs by name, their tolerance, κ of R or None where the explained
    logit is ill-conditioned). Outputs are held to max(1e-5, 10·κ_out)."""
    out = []
    for x in X.astype(np.float64):
        values, R = dag.explain_sample(net, x, (default, rules))
        logits = values[dag.explained(net)]
        kappa, kappa_out = sensitivity(net, x, default, rules)
        kappa = kappa if oracle.well_conditioned(logits.reshape(1, -1))[0] else None
        out.append((R, {name: values[name] for name in net.outputs}, max(1e-5, 10 * kappa_out), kappa))
    return out
