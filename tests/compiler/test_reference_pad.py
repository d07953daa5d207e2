"""The float64 run's Pad (compiler/verify/reference_pad.py) equals onnxruntime's, crops included, and `lrpc
verify` runs its float64 check on a model that crops (it reported the check as not run before)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import lrpc
from lrpc.verify.reference_pad import pad
from nets import make_model, tensor


def _pad_model(pads, mode, axes=None, opset=19):
    inputs = ["x", "pads", ""] + (["axes"] if axes is not None else [])
    inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads")]
    if axes is not None:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
    node = helper.make_node("Pad", inputs, ["y"], mode=mode)
    graph = helper.make_graph(
        [node],
        "pad",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize(
    "pads, axes",
    [
        ([0, 0, 1, 2, 0, 0, 1, 0], None),
        ([0, 0, -1, -2, 0, 0, -1, -1], None),
        ([0, 0, 2, -1, 0, 0, -1, 2], None),
        ([-1, 1, 2, -2], [2, 3]),
    ],
)
def test_matches_onnxruntime(pads, axes, mode):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)
    want = ort.InferenceSession(_pad_model(pads, mode, axes).SerializeToString()).run(None, {"x": x})[0]
    got = pad(x.astype(np.float64), pads, mode, 0.0, axes)
    np.testing.assert_array_equal(got.astype(np.float32), want)


def test_verify_runs_float64_on_a_cropping_model():
    rng = np.random.default_rng(1)
    init = {
        "w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
        "crop": np.array([0, 0, 1, -1, 0, 0, -2, -1]),
        "fc": rng.standard_normal((3, 4 * 5 * 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Pad", ["c", "crop"], ["p"]),
        helper.make_node("Relu", ["p"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    model = make_model(nodes, [tensor("x", ["N", 2, 6, 6])], [tensor("y", ["N", 3])], init)
    report = lrpc.verify(lrpc.compile(model, rule="epsilon"), samples=2)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["float64"] == "pass" and report.passed, report.text()
