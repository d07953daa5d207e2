"""`lrpc verify` on static QDQ files: its float64 check runs (onnx's reference evaluator has no
QuantizeLinear/DequantizeLinear before opset 19; lrpc's run them at any opset: verify/quantized.py), takes
the deployed quantizers' integers, passes on a correct file, and still fails an edited one.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import lrpc
import nets

pytest.importorskip("onnxruntime.quantization")
from test_quantized import quantized  # noqa: E402

from lrpc.verify.float64 import evaluate  # noqa: E402


@pytest.mark.parametrize("name", ["residual_dw", "conv_stack"])
@pytest.mark.parametrize("options", [{}, {"rule": "epsilon"}], ids=["composite", "epsilon"])
def test_the_float64_check_runs_and_passes_on_a_qdq_file(options, name, tmp_path_factory):
    q = quantized(name, False, tmp_path_factory)
    explained = lrpc.compile(q, **options)
    source = q.SerializeToString()
    for report in (lrpc.verify(explained, samples=3), lrpc.verify(explained, source=source, samples=3)):
        (check,) = [c for c in report.checks if c.name == "float64"]
        assert check.status == "pass", report.text()
        assert all(r["error"] is not None and r["error"] <= 1e-5 for r in report.rows), report.text()


def test_a_file_with_int8_pairs_passes_against_a_fresh_compile_with_uint8_ones(monkeypatch, tmp_path_factory):
    """A file compiled before lrpc made onnxruntime's uint8 pairs uint8 (here: that step switched off) writes int8
    integers where a fresh compile of its source reads uint8 ones: verify shifts them by the zero points."""
    q = quantized("conv_stack", True, tmp_path_factory)
    with monkeypatch.context() as patch:
        patch.setattr("lrpc.passes.quantized.unsigned_activations", lambda *_: 0)
        older = lrpc.compile(q)
    zero_points = {t.name: t.data_type for t in older.graph.initializer}
    assert {zero_points[n.input[2]] for n in older.graph.node if n.op_type == "QuantizeLinear"} == {
        onnx.TensorProto.INT8
    }
    report = lrpc.verify(older, source=q.SerializeToString(), samples=2)
    assert report.passed, report.text()


def _doubled_relevance(explained: onnx.ModelProto) -> onnx.ModelProto:
    edited = onnx.ModelProto.FromString(explained.SerializeToString())
    (node,) = [n for n in edited.graph.node if "relevance" in n.output]
    node.output[0] = "relevance_half"
    edited.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    edited.graph.node.append(helper.make_node("Mul", ["relevance_half", "two"], ["relevance"], name="edit"))
    return edited


def test_the_float64_check_fails_an_edited_qdq_file(tmp_path_factory):
    q = quantized("conv_stack", True, tmp_path_factory)
    edited = _doubled_relevance(lrpc.compile(q))
    report = lrpc.verify(edited, source=q.SerializeToString(), samples=2)
    (check,) = [c for c in report.checks if c.name == "float64"]
    assert check.status == "fail", report.text()
    assert not report.passed


def _qdq_pair(axis_scale: bool) -> onnx.ModelProto:
    """QuantizeLinear → DequantizeLinear at opset 13, per tensor or per channel (axis 1), int8 and uint8."""
    scale = np.array([2.0**-6, 0.05, 0.1], np.float32) if axis_scale else np.array(2.0**-5, np.float32)
    zero = np.array([3, -4, 0], np.int8) if axis_scale else np.array(128, np.uint8)
    init = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero, "z")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1),
    ]
    q_type = onnx.TensorProto.INT8 if axis_scale else onnx.TensorProto.UINT8
    graph = helper.make_graph(
        nodes,
        "qdq",
        [nets.tensor("x", [4, 3, 5])],
        [nets.tensor("y", [4, 3, 5]), helper.make_tensor_value_info("q", q_type, [4, 3, 5])],
        init,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_the_reference_quantizers_compute_what_onnxruntime_does(per_channel):
    """Saturation included (inputs up to ±20 overflow int8 at scale 1/64); values on a .5 boundary round to even."""
    from oracle import session

    model = _qdq_pair(per_channel)
    x = np.random.default_rng(3).uniform(-20, 20, (4, 3, 5)).astype(np.float32)
    x[0, 0, :3] = np.array([0.5, 1.5, -2.5], np.float32) * (2.0**-6 if per_channel else 2.0**-5)  # exact halves
    want_y, want_q = session(model).run(["y", "q"], {"x": x})
    got = evaluate(model, {"x": x}, ["y", "q"])
    assert got["q"].dtype == want_q.dtype
    np.testing.assert_array_equal(got["q"], want_q)
    np.testing.assert_array_equal(got["y"], want_y)
