"""Loading: device selection (never a silent CPU fallback) and metadata checks."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest

from lrpc_runtime import DeviceUnavailableError, Explainer, NotExplainedError

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize(
    "kwargs",
    [
        {"device": "cuda"},
        {"device": "cuda:0"},
        {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
    ],
)
def test_cuda_unavailable_raises(single_model, kwargs):
    with pytest.raises(DeviceUnavailableError) as info:
        Explainer(single_model("max"), **kwargs)
    message = str(info.value)
    assert "CUDA was requested" in message
    assert "CPUExecutionProvider" in message
    assert 'pip install "lrpc[cuda]"' in message
    assert isinstance(info.value, RuntimeError)


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
@pytest.mark.filterwarnings("ignore:Specified provider")
def test_cuda_dropped_by_session_raises(single_model, monkeypatch):
    # Pretend the provider is available: onnxruntime then drops it at session
    # creation, which must be reported instead of silently using the CPU.
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(DeviceUnavailableError, match="dropped the CUDAExecutionProvider"):
        Explainer(single_model("max"), device="cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a GPU")
def test_cuda_runs(single_model):
    import numpy as np

    ex = Explainer(single_model("max"), device="cuda")
    assert ex.providers[0] == "CUDAExecutionProvider"
    x = np.ones((3, 4), dtype=np.float32)
    np.testing.assert_allclose(ex.explain(x).relevance_map, x * 2)


def test_explicit_cpu_providers(single_model):
    ex = Explainer(single_model("max"), device="cuda", providers=["CPUExecutionProvider"])
    assert ex.providers == ["CPUExecutionProvider"]


def test_file_without_metadata(single_model, tmp_path):
    path = tmp_path / "plain.onnx"
    path.write_bytes(single_model("max", metadata=False))
    with pytest.raises(NotExplainedError, match=r"plain\.onnx is not an explained.*lrpc compile"):
        Explainer(path)
    with pytest.raises(ValueError, match="lrpc compile"):
        Explainer(single_model("max", metadata=False))


def _with_meta(source: bytes, changes: dict[str, str | None]) -> bytes:
    model = onnx.load_from_string(source)
    props = {p.key: p.value for p in model.metadata_props}
    props.update(changes)
    del model.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"lrpc.rule": None}, "incomplete lrpc metadata"),
        ({"lrpc.target": "best"}, "unsupported lrpc.target"),
        ({"lrpc.target": "fixed:x"}, "unsupported lrpc.target"),
        ({"lrpc.target": "input"}, "no int64 input named 'target'"),
        ({"lrpc.relevance": "{not json"}, "not valid JSON"),
        ({"lrpc.relevance": "[]"}, "non-empty JSON object"),
        ({"lrpc.relevance": json.dumps({"input": "nope"})}, "does not match the graph"),
        ({"lrpc.relevance": json.dumps({"x": "relevance"})}, "does not match the graph"),
    ],
)
def test_malformed_metadata(single_model, changes, match):
    with pytest.raises(NotExplainedError, match=match):
        Explainer(_with_meta(single_model("max"), changes))


def test_sessions_run_without_the_memory_pattern_planner_unless_told(single_model):
    """PROFILE.md §7: the planner's one block cost an explained VGG-16 1.3 GB at batch 16, and no time."""
    assert Explainer(single_model("max"))._session.get_session_options().enable_mem_pattern is False
    given = ort.SessionOptions()
    assert (
        Explainer(single_model("max"), session_options=given)._session.get_session_options().enable_mem_pattern is True
    )


def test_the_metadata_is_read_without_parsing_the_graph(single_model, tmp_path):
    """read_file_metadata walks the top-level fields of the file (mmapped) and decodes only metadata_props:
    the same entries as onnx's parse, from a path or from bytes; a file that is no ModelProto gives none."""
    from lrpc_runtime.metadata import read_file_metadata

    plain = single_model("max")
    model = onnx.load_from_string(plain)
    model.metadata_props.add(key="lrpc.execution_order", value="file")
    onnx.save(model, tmp_path / "ordered.onnx")
    expected = {p.key: p.value for p in model.metadata_props}
    assert (
        read_file_metadata(str(tmp_path / "ordered.onnx")) == expected == read_file_metadata(model.SerializeToString())
    )
    assert Explainer(tmp_path / "ordered.onnx")._session.get_session_options().execution_order == (
        ort.ExecutionOrder.PRIORITY_BASED
    )
    assert Explainer(plain)._session.get_session_options().execution_order == ort.ExecutionOrder.DEFAULT
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert read_file_metadata(str(tmp_path / "junk.onnx")) == {} == read_file_metadata(str(tmp_path / "empty.onnx"))
    with pytest.raises(NotExplainedError, match="onnxruntime cannot load it"):
        Explainer(tmp_path / "junk.onnx")
