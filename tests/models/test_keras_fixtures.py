"""The tf2onnx fixtures in tests/fixtures/keras, checked without TensorFlow.

Each ``NAME.onnx`` must pass the checker and reproduce Keras' own forward outputs stored in
``NAME.npz`` (written by models/keras_fixtures.py in .venv-keras). A few structural facts the
canonization passes rely on are pinned here too, so a regenerated fixture that changes them fails.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras"
# file stem -> (npz stem, output name)
CASES = {
    "cnn_avgpool_bn": ("cnn_avgpool_bn", "logits"),
    "cnn_avgpool_bn_softmax": ("cnn_avgpool_bn_softmax", "probs"),
    "cnn_avgpool_bn_export": ("cnn_avgpool_bn", "Identity:0"),  # Keras' model.export names it so
    "dense_bn": ("dense_bn", "logits"),
    "bn_first": ("bn_first", "logits"),
    "avgpool_same_odd": ("avgpool_same_odd", "logits"),
}
BN_LAYER = {
    "cnn_avgpool_bn": "bn1",
    "cnn_avgpool_bn_softmax": "bn1",
    "cnn_avgpool_bn_export": "bn1",
    "dense_bn": "bn1",
    "bn_first": "bn0",
}
KERAS_BN_EPSILON = 1e-3


def _load(stem):
    return onnx.load(str(FIXTURES / f"{stem}.onnx"))


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


def _ops(model):
    return [n.op_type for n in model.graph.node]


def test_fixture_files_are_small_and_complete():
    names = sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".onnx", ".npz"))
    expected = sorted([f"{s}.onnx" for s in CASES] + [f"{n}.npz" for n in {n for n, _ in CASES.values()}])
    assert names == expected
    for name in names:
        assert (FIXTURES / name).stat().st_size < 200_000, name
    assert (FIXTURES / "README.md").is_file()


@pytest.mark.parametrize("stem", sorted(CASES))
def test_fixture_matches_keras_forward(stem):
    npz, output = CASES[stem]
    model = _load(stem)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert dict((o.domain, o.version) for o in model.opset_import)[""] == 17
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == [output]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    data = np.load(FIXTURES / f"{npz}.npz")
    x, want = data["x"], data["y"]
    assert x.dtype == np.float32 and x.shape[0] == 4 and np.isfinite(want).all()
    for n in (1, 4):
        (got,) = _run(model, x[:n])
        assert got.shape == want[:n].shape
        np.testing.assert_allclose(got, want[:n], rtol=1e-5, atol=1e-6)


def test_softmax_variant_shares_the_logits_weights():
    logits = _run(_load("cnn_avgpool_bn"), np.load(FIXTURES / "cnn_avgpool_bn.npz")["x"])[0]
    probs = np.load(FIXTURES / "cnn_avgpool_bn_softmax.npz")["y"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), probs, rtol=1e-5, atol=1e-6)
    assert _ops(_load("cnn_avgpool_bn_softmax"))[-1] == "Softmax"


def _init(model, name):
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


@pytest.mark.parametrize("stem", sorted(BN_LAYER))
def test_batchnorm_appears_as_precomputed_mul_add(stem):
    """tf2onnx writes inference BN as x * scale + shift, scale = γ/√(var+ε), shift = β − μ·scale."""
    model = _load(stem)
    ops = _ops(model)
    assert "BatchNormalization" not in ops and ops.count("Mul") == 1
    (mul,) = [n for n in model.graph.node if n.op_type == "Mul"]
    (add,) = [n for n in model.graph.node if n.op_type == "Add" and mul.output[0] in n.input]
    npz, _ = CASES[stem]
    p = {
        k.split(".", 1)[1]: v for k, v in np.load(FIXTURES / f"{npz}.npz").items() if k.startswith(BN_LAYER[stem] + ".")
    }
    scale = p["gamma"] / np.sqrt(p["moving_variance"] + KERAS_BN_EPSILON)
    shift = p["beta"] - p["moving_mean"] * scale
    assert (p["gamma"] != 1).all() and (p["moving_mean"] != 0).all() and (p["moving_variance"] != 1).all()
    np.testing.assert_allclose(_init(model, mul.input[1]).ravel(), scale, rtol=1e-6)
    np.testing.assert_allclose(_init(model, add.input[1]).ravel(), shift, rtol=1e-5, atol=1e-6)
    if stem == "bn_first":  # on the channels-last input, before the NHWC -> NCHW Transpose
        assert ops[:3] == ["Mul", "Add", "Transpose"] and mul.input[0] == "input"


def test_same_padding_avgpool_excludes_the_pad():
    """Keras 'same' average pooling is AveragePool with explicit pads and count_include_pad=0."""
    model = _load("cnn_avgpool_bn")
    pools = [n for n in model.graph.node if n.op_type == "AveragePool"]
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in pools]
    assert [a["kernel_shape"] for a in attrs] == [[2, 2], [3, 3]]
    assert [a["pads"] for a in attrs] == [[0, 0, 0, 0], [1, 1, 1, 1]]  # 16 -> 8, then 7 -> 4
    assert all(a.get("count_include_pad", 0) == 0 and "auto_pad" not in a for a in attrs)
    # Counting the pad at the 7x7 map's borders would change the output: the fixture can tell.
    pools[1].attribute.append(helper.make_attribute("count_include_pad", 1))
    data = np.load(FIXTURES / "cnn_avgpool_bn.npz")
    (wrong,) = _run(model, data["x"])
    assert np.abs(wrong - data["y"]).max() > 1e-3


def test_same_padding_avgpool_with_asymmetric_pads():
    """Pool 2 'same' on 7x7 pads only at the end; pool 3 stride 1 'same' pads 1 on each side."""
    model = _load("avgpool_same_odd")
    pools = [n for n in model.graph.node if n.op_type == "AveragePool"]
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in pools]
    assert [(a["kernel_shape"], a["strides"], a["pads"]) for a in attrs] == [
        ([2, 2], [2, 2], [0, 0, 1, 1]),
        ([3, 3], [1, 1], [1, 1, 1, 1]),
    ]
    assert all(a.get("count_include_pad", 0) == 0 for a in attrs)
