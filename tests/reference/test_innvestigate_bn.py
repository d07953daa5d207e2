"""iNNvestigate 2.1.2's BatchNormalization handling, against lrpc, from a fixture (no TensorFlow needed).

tests/fixtures/innvestigate/cnn_bn.onnx is benchmarks/innvestigate_ref.py's seeded tf.keras
Conv-BN-ReLU-pool ×2, Dense, Dense with non-trivial BN statistics (tf2onnx folds each BN into its
Conv, exactly); cnn_bn_reference.npz holds 4 inputs, iNNvestigate's float64 analyses of them (Keras
floatx float64) and the BN parameters. iNNvestigate applies each analyzer's BN rule to a surrogate
per-channel layer k'·c + b' with k' = γ/√(σ⁴ + ε), b' = β − μ/√(σ⁴ + ε) (exact: γ/√(σ² + ε) and
β − γμ/√(σ² + ε)), see benchmarks/innvestigate_bn.py. Per analyzer and batch (1, 4), both in float64:

    (a) lrpc on the model (the exact fold) is > 1e-5 (relative L2) from iNNvestigate;
    (b) lrpc on the model with iNNvestigate's surrogate split out of each Conv is ≤ 1e-9 from it —
        the whole difference is their formula (measured 2e-15 … 2e-13; lrpc's goal is 1e-5).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import innvestigate_bn as BN  # noqa: E402

pytestmark = pytest.mark.reference
FIXTURES = Path(__file__).parents[1] / "fixtures" / "innvestigate"
ANALYZERS = ["lrp.epsilon", "lrp.alpha_1_beta_0", "lrp.alpha_2_beta_1", "lrp.sequential_preset_a"]


@pytest.fixture(scope="module")
def case():
    reference = dict(np.load(FIXTURES / "cnn_bn_reference.npz"))
    return onnx.load(str(FIXTURES / "cnn_bn.onnx")), BN.bn_params(reference), reference


@pytest.mark.parametrize("analyzer", ANALYZERS)
@pytest.mark.parametrize("batch", [1, 4])
def test_difference_from_innvestigate_is_exactly_its_bn_formula(case, analyzer, batch):
    model, layers, reference = case
    exact, theirs = BN.compare(
        model, layers, reference["x"][:batch], reference[analyzer][:batch], analyzer, float64=True
    )
    assert exact > 1e-5, f"{analyzer} batch {batch}: lrpc with the exact BN fold is only {exact:.2e} away"
    assert theirs <= 1e-9, f"{analyzer} batch {batch}: lrpc with iNNvestigate's BN rule is {theirs:.2e} away"


def test_split_model_keeps_the_forward(case):
    """The surrogate and the restoring layer together compute the BN exactly: same logits in float32."""
    model, layers, reference = case
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"input": reference["x"]}
    )[0]
    want = run(model)
    for preset in (False, True):
        split = BN.split_bn(model, layers, preset)
        assert sum(n.name.endswith(BN.SURROGATE) for n in split.graph.node) == len(layers) == 2
        np.testing.assert_allclose(run(split), want, rtol=1e-5, atol=1e-5)


def test_innvestigate_fold_squares_the_variance_and_drops_gamma_from_the_mean():
    gamma, beta, mean, var, eps = (np.array([v]) for v in (2.0, 0.5, 0.3, 4.0, 0.0))
    k, b = BN.exact_fold(gamma, beta, mean, var, eps)
    k_their, b_their = BN.innvestigate_fold(gamma, beta, mean, var, eps)
    np.testing.assert_allclose([k[0], b[0]], [2.0 / 2.0, 0.5 - 2.0 * 0.3 / 2.0])
    np.testing.assert_allclose([k_their[0], b_their[0]], [2.0 / 4.0, 0.5 - 0.3 / 4.0])
