"""`lrpc export triton`: the repository entry's config parses with Triton's own model_config.proto and
describes the explained graph exactly; the copied model runs and gives the file's outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import lrpc
from lrpc import emit
from lrpc.cli import main
from lrpc.triton import export_triton
from nets import small_cnn


def model_config_module():
    """tritonclient's generated model_config_pb2, loaded from its file (tritonclient.grpc itself imports grpc;
    scripts/test.sh installs tritonclient --no-deps)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.skip("tritonclient is not installed (pip install --no-deps tritonclient)")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def parse_config(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_module().ModelConfig())


@pytest.fixture
def explained(tmp_path):
    path = tmp_path / "explained.onnx"
    lrpc.compile(small_cnn(), target="input", output=path)
    return path


def test_config_parses_and_matches_the_model(tmp_path, explained):
    folder = Path(export_triton(explained, tmp_path / "repo", name="cnn", max_batch=16))
    config = parse_config(folder / "config.pbtxt")
    mc = model_config_module()
    assert config.name == "cnn" and config.backend == "onnxruntime" and config.max_batch_size == 16
    assert config.HasField("dynamic_batching") and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    sess = ort.InferenceSession(str(folder / "1" / "model.onnx"))
    declared = {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in [*config.input, *config.output]}
    types = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
    graph = {
        v.name: (types[v.type], [d if isinstance(d, int) else -1 for d in v.shape[1:]] or [1])
        for v in [*sess.get_inputs(), *sess.get_outputs()]
    }
    assert declared == graph
    target = next(t for t in config.input if t.name == "target")
    assert list(target.reshape.shape) == []  # [batch] tensors are declared [1] and reshaped to a scalar
    x, t = np.random.default_rng(0).random((3, 2, 8, 8), dtype=np.float32), np.array([0, 2, 4])
    original = ort.InferenceSession(str(explained)).run(None, {"x": x, "target": t})
    for a, b in zip(sess.run(None, {"x": x, "target": t}), original):
        np.testing.assert_array_equal(a, b)


def test_external_weights_travel_with_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(emit, "_PROTOBUF_LIMIT", 1024)
    path = tmp_path / "big" / "explained.onnx"
    path.parent.mkdir()
    lrpc.compile(small_cnn(), output=path)
    assert (path.parent / "explained.onnx.data").exists()
    folder = Path(export_triton(path, tmp_path / "repo", gpu=True))
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.onnx", "model.onnx.data"]
    assert (
        parse_config(folder / "config.pbtxt").instance_group[0].kind
        == model_config_module().ModelInstanceGroup.KIND_GPU
    )
    x = np.ones((1, 2, 8, 8), np.float32)
    np.testing.assert_array_equal(
        ort.InferenceSession(str(folder / "1" / "model.onnx")).run(None, {"x": x})[-1],
        ort.InferenceSession(str(path)).run(None, {"x": x})[-1],
    )


def test_cli_errors_leave_the_repository_as_it_was(tmp_path, explained, capsys):
    repo = tmp_path / "repo"
    assert main(["export", "triton", str(explained), "--repo", str(repo), "--name", "m"]) == 0
    assert main(["export", "triton", str(explained), "--repo", str(repo), "--name", "m"]) == 2
    assert "exists already" in capsys.readouterr().err
    plain = tmp_path / "plain.onnx"
    onnx.save(small_cnn(), plain)
    assert main(["export", "triton", str(plain), "--repo", str(repo)]) == 2
    assert "not an explained file" in capsys.readouterr().err
    assert main(["export", "triton", str(explained), "--repo", str(repo), "--max-batch", "0"]) == 2
    assert sorted(p.name for p in repo.iterdir()) == ["m"]
