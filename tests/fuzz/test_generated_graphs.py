"""Fuzzing with random valid graphs (issue 10, item 4a): conv/dense/max and average pools/residual
Add/Concat nets of random shapes, strides, pads, groups, dilations and biases (tests/fuzz/graphs.py),
compiled with every rule and two composites (judge.SPECS), then:

1. lrpc.compile finishes within a hard deadline and raises nothing;
2. the explained file passes onnx.checker.check_model(full_check=True) and runs in onnxruntime (CPU);
3. the model's outputs equal the float64 oracle's forward pass (relative L2 ≤ max(1e-5, 10·κ_out) per
   sample, κ_out their float32 conditioning: judge.py);
4. the relevance is finite and, per sample, within max(1e-4, 10·κ, 3·ν) relative L2 of the float64 DAG
   oracle (oracle.onnx_reader's ops under the same rule map; κ, ν and the samples left out: judge.py);
5. conservation on bias-free graphs: LRP-0 gives Σᵢ Rᵢ = y_t, the explained logit, within 1e-4·|y_t|;
   LRP-ε (ε = 1e-6) within 1e-4·|y_t| plus what ε absorbs in exact arithmetic (|Σ R − y_t| of the float64
   oracle: up to ~1e-4·|y_t| where |z| ~ 1e-2, so it cannot be left out of the bound). Every op
   generated conserves: a linear layer Σᵢ xᵢ Σⱼ wⱼᵢ sⱼ = Σⱼ zⱼ sⱼ = Σⱼ Rⱼ
   (ε takes Rⱼ·ε/(zⱼ + ε)), ReLU and MaxPool pass R on, average pools are depthwise linear layers, the
   residual Add splits R by xᵢ/(x₁ + x₂), Concat routes it. (With biases, bᵢ·sᵢ is absorbed; the other
   rules do not conserve in general — z⁺ drops a unit's R where z⁺ = 0, α-β gives α·R where z⁻ = 0,
   flat and w² spread R onto dead units whose residual Add can then sum to 0.)

LRPC_FUZZ_EXAMPLES sets the number of examples per test (default: sized for ≤ 60 s for tests/fuzz
on 2 cores); hypothesis is derandomized, so a given budget always runs the same examples.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import lrpc
import oracle
from graphs import graphs
from judge import (
    SPECS,
    TALLY,
    compile_kwargs,
    deadline,
    fuzz_settings,
    inputs,
    judged,
    relevance_tolerance,
    rule_map,
)
from oracle import dag
from oracle.onnx_reader import read_model

pytestmark = pytest.mark.fuzz
BATCH = 4
COMPILE_SECONDS = 30.0  # a compile of these graphs takes ~0.05 s


def compiled_and_run(graph, spec, X):
    """Steps 1–2: compile within the deadline, check, run; (the outputs by name, the session)."""
    with deadline(COMPILE_SECONDS, "lrpc.compile"):
        explained = lrpc.compile(graph.model, **compile_kwargs(spec))
    onnx.checker.check_model(explained, full_check=True)
    sess = oracle.session(explained)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": X})))
    for name, value in got.items():
        assert np.isfinite(value).all(), f"{name} has NaN or Inf"
    assert got["relevance"].shape == X.shape
    return got, sess


def ulp_noise(sess, X, relevance, seed) -> np.ndarray:
    """ν per sample: the largest relative change of lrpc's own float32 relevance when every input moves by
    one ulp (two random directions) — its rounding noise on this sample (judge.py)."""
    rng = np.random.default_rng(seed)
    nu = np.zeros(len(X))
    for _ in range(2):
        up = np.where(rng.random(X.shape) < 0.5, np.float32(np.inf), np.float32(-np.inf))
        moved = sess.run(["relevance"], {"x": np.nextafter(X, up.astype(np.float32))})[0]
        nu = np.maximum(nu, oracle.rel_err_per_sample(moved, relevance))
    return nu


@fuzz_settings(300)
@given(graph=graphs(), spec=st.sampled_from(SPECS))
def test_generated_graphs_match_the_oracle(graph, spec):
    note(onnx.printer.to_text(graph.model.graph))
    X = inputs(spec, graph.input_shape, BATCH, graph.seed)
    got, sess = compiled_and_run(graph, spec, X)
    nu = ulp_noise(sess, X, got["relevance"], graph.seed)
    net = read_model(graph.model)
    default, rules = rule_map(net, graph.model, spec)
    compared = 0
    for n, (R, outputs, tol_out, kappa) in enumerate(judged(net, X, default, rules)):
        for name, y in outputs.items():
            oracle.assert_rel_close(got[name][n : n + 1], y[None], tol_out, what=f"output {name}, sample {n}")
        if kappa is not None and nu[n] > 10 * max(kappa, 1e-6):
            TALLY[f"graphs: lrpc's 1-ulp noise ν > 10·κ ({spec.split(':')[0]})"] += 1
        tol = relevance_tolerance(kappa, nu[n])
        if tol is None:
            continue
        err = oracle.rel_err_per_sample(got["relevance"][n : n + 1], R[None])[0]
        assert err <= tol, f"{spec}, sample {n}: relative L2 error {err:.3g} > {tol:.3g} (κ {kappa:.2g}, ν {nu[n]:.2g})"
        compared += 1
        TALLY["graphs: samples compared at 1e-4" if tol == 1e-4 else "graphs: samples compared at 10·κ or 3·ν"] += 1
    TALLY["graphs: samples only finite (ill-conditioned)"] += BATCH - compared
    TALLY["graphs: compiled and checked"] += 1
    TALLY.update(f"graphs: with {op}" for op in graph.ops)


CONSERVING = ["zero", "epsilon"]


@fuzz_settings(100)
@given(graph=graphs(bias=False), spec=st.sampled_from(CONSERVING))
def test_lrp0_and_epsilon_conserve_on_bias_free_graphs(graph, spec):
    note(onnx.printer.to_text(graph.model.graph))
    X = inputs(spec, graph.input_shape, BATCH, graph.seed)
    got = compiled_and_run(graph, spec, X)[0]
    net = read_model(graph.model)
    start = net.stripped.get(net.outputs[0], net.outputs[0])
    for n, x in enumerate(X.astype(np.float64)):
        values, R = dag.explain_sample(net, x, (spec, rule_map(net, graph.model, spec)[1]))
        logits = values[start].reshape(1, -1)
        if not oracle.well_conditioned(logits)[0]:
            TALLY["conservation: samples skipped (ill-conditioned logit)"] += 1
            continue
        y_t, total = logits.max(), got["relevance"][n].sum(dtype=np.float64)
        absorbed = abs(R.sum() - y_t)  # by ε in exact arithmetic: Σⱼ Rⱼ·ε/(zⱼ + ε) per layer
        assert spec != "zero" or absorbed <= 1e-9 * abs(y_t), f"the oracle's LRP-0 does not conserve: {absorbed}"
        assert abs(total - y_t) <= absorbed + 1e-4 * abs(y_t), (
            f"{spec}, sample {n}: Σ R = {total:.9g}, logit {y_t:.9g}, ε absorbs {absorbed:.3g}"
        )
        TALLY[f"conservation: samples conserving ({spec})"] += 1
