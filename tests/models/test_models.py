"""Tests of the models in models/: the VGG builders and the committed digits CNN.

models/ is not a package, so vgg.py is loaded from its path.
"""

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"


def _load_vgg():
    spec = importlib.util.spec_from_file_location("lrpc_models_vgg", MODELS / "vgg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vgg = _load_vgg()


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _inits(model):
    return {t.name: t for t in model.graph.initializer}


def test_small_vgg_checks_and_runs():
    model = vgg.small_vgg()
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names)
    assert names[:2] == ["conv1_1", "relu1_1"] and names[-1] == "fc2"
    sess = _session(model)
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = rng.random((batch, 3, 32, 32), dtype=np.float32)
        (y,) = sess.run(["logits"], {"input": x})
        assert y.shape == (batch, 10)
        assert np.isfinite(y).all()


def test_small_vgg_is_deterministic_per_seed():
    first = vgg.small_vgg(seed=0).SerializeToString()
    assert vgg.small_vgg(seed=0).SerializeToString() == first
    assert vgg.small_vgg(seed=1).SerializeToString() != first


def test_small_vgg_without_bias():
    model = vgg.small_vgg(bias=False)
    onnx.checker.check_model(model, full_check=True)
    assert not [name for name in _inits(model) if name.endswith(".bias")]
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert len(node.input) == 2, node.name
    # Biases come from their own generator: the weights match the biased model's.
    with_bias = _inits(vgg.small_vgg(bias=True))
    for name, tensor in _inits(model).items():
        assert tensor.raw_data == with_bias[name].raw_data, name
    (y,) = _session(model).run(None, {"input": np.ones((2, 3, 32, 32), np.float32)})
    assert y.shape == (2, 10)


def test_vgg_softmax_output():
    model = vgg.vgg([8, "M"], in_shape=(1, 4, 4), classes=3, hidden=(), softmax=True)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["probs"]
    (p,) = _session(model).run(None, {"input": np.ones((2, 1, 4, 4), np.float32)})
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)


def test_save_small_vgg_inline(tmp_path):
    model = vgg.small_vgg()
    path = tmp_path / "small.onnx"
    vgg.save(model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["small.onnx"]
    assert onnx.load(str(path)).SerializeToString() == model.SerializeToString()


def test_digits_cnn_accuracy():
    model = onnx.load(str(MODELS / "digits_cnn.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probs"]
    data = np.load(MODELS / "digits_test.npz")
    x, y = data["x"], data["y"]
    assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8) and y.dtype == np.int64
    (probs,) = _session(model).run(["probs"], {"input": x})
    assert probs.shape == (len(y), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == y).mean() >= 0.95


@pytest.fixture(scope="module")
def vgg16_model():
    return vgg.vgg16()


@pytest.mark.slow
def test_vgg16_builds_and_runs(vgg16_model):
    model = vgg16_model
    onnx.checker.check_model(model, full_check=True)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert params == 138_357_544
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    (y,) = _session(model).run(["logits"], {"input": x})
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all()


@pytest.mark.slow
def test_vgg16_saves_external_data(vgg16_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stale data file in the working directory is fine
    path = tmp_path / "vgg16.onnx"
    for _ in range(2):  # saving again replaces the data file instead of growing it
        vgg.save(vgg16_model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg16.onnx", "vgg16.onnx.data"]
    assert 500_000_000 < (tmp_path / "vgg16.onnx.data").stat().st_size < 600_000_000
    assert path.stat().st_size < 100_000
    # The in-memory model keeps its weights after an external save.
    for tensor in vgg16_model.graph.initializer:
        assert tensor.data_location == onnx.TensorProto.DEFAULT and tensor.raw_data
    onnx.checker.check_model(str(path))
