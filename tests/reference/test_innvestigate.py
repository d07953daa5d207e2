"""lrpc against iNNvestigate 2.1.2's own outputs, kept as a fixture (no TensorFlow needed here).

tests/fixtures/innvestigate/cnn.onnx is the seeded tf.keras CNN of benchmarks/innvestigate_ref.py
(Conv-pool-Conv-pool-Dense-Dense, ReLU inside the layers, with biases) converted by tf2onnx;
cnn_reference.npz holds 4 inputs and iNNvestigate's analyses of them (each sample's largest logit),
written by that script in .venv-innvestigate (TF 2.14.1, iNNvestigate 2.1.2). lrpc compiles the ONNX
file with --convention innvestigate and must agree to 1e-5 (relative L2 over the batch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import lrpc

pytestmark = pytest.mark.reference
FIXTURES = Path(__file__).parents[1] / "fixtures" / "innvestigate"
CASES = [
    ("lrp.z", dict(rule="zero")),
    ("lrp.epsilon", dict(rule="epsilon")),
    ("lrp.alpha_1_beta_0", dict(rule="alpha1beta0")),
    ("lrp.alpha_2_beta_1", dict(rule="alpha2beta1")),
    ("lrp.flat", dict(rule="flat")),
    ("lrp.w_square", dict(rule="w2")),
    ("lrp.z_plus", dict(rule="zplus")),
    ("lrp.sequential_preset_a", dict(composite="A")),
    ("lrp.sequential_preset_b", dict(composite="B")),
    ("lrp.sequential_preset_a_flat", dict(composite="AFlat")),
    ("lrp.sequential_preset_b_flat", dict(composite="BFlat")),
    ("gradient", dict(method="gradient")),
    ("input_t_gradient", dict(method="inputxgradient")),
    ("guided_backprop", dict(method="guidedbackprop")),
    ("deconvnet", dict(method="deconvnet")),
]


@pytest.mark.parametrize("analyzer, options", CASES)
def test_matches_innvestigate(analyzer, options):
    reference = np.load(FIXTURES / "cnn_reference.npz")
    options = dict(options, convention="innvestigate")
    sess = ort.InferenceSession(lrpc.compile(str(FIXTURES / "cnn.onnx"), **options).SerializeToString())
    for batch in (1, 4):
        x = reference["x"][:batch]
        relevance = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))["relevance"]
        expected = reference[analyzer][:batch]
        err = np.linalg.norm(relevance - expected) / np.linalg.norm(expected)
        assert err <= 1e-5, f"{analyzer} batch {batch}: relative L2 error {err:.2e}"


@pytest.mark.parametrize("method, analyzer", [("guidedbackprop", "guided_backprop"), ("deconvnet", "deconvnet")])
def test_innvestigate_seeds_guided_backprop_and_deconvnet_with_the_logit(method, analyzer):
    """Its reverse analyzers start at the selected logit's value, its gradient at 1: without the convention
    lrpc's guided backprop (Zennit's, seeded with 1) is iNNvestigate's divided by each sample's logit."""
    reference = np.load(FIXTURES / "cnn_reference.npz")
    sess = ort.InferenceSession(lrpc.compile(str(FIXTURES / "cnn.onnx"), method=method).SerializeToString())
    logits, relevance = sess.run(None, {"input": reference["x"]})
    expected = reference[analyzer]
    assert np.linalg.norm(relevance - expected) / np.linalg.norm(expected) > 0.1
    scaled = relevance * logits.max(axis=1)[:, None, None, None]
    assert np.linalg.norm(scaled - expected) / np.linalg.norm(expected) <= 1e-5


def test_lrpc_default_epsilon_differs_from_innvestigates_by_its_epsilon_only():
    """Without the convention, lrpc's ε = 1e-6 is measurably not iNNvestigate's 1e-7 — and eps=1e-7 is."""
    reference = np.load(FIXTURES / "cnn_reference.npz")
    errors = {}
    for spec in ("epsilon", "epsilon:eps=1e-7"):
        sess = ort.InferenceSession(lrpc.compile(str(FIXTURES / "cnn.onnx"), rule=spec).SerializeToString())
        relevance = sess.run(None, {"input": reference["x"]})[-1]
        errors[spec] = np.linalg.norm(relevance - reference["lrp.epsilon"]) / np.linalg.norm(reference["lrp.epsilon"])
    assert errors["epsilon:eps=1e-7"] <= 1e-5 < errors["epsilon"], errors
