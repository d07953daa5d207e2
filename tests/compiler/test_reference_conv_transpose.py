"""The float64 run's ConvTranspose (compiler/verify/reference_conv_transpose.py) equals onnxruntime's for
every group layout, and `lrpc verify` runs its float64 check on a grouped-conv model (onnx's own
reference ConvTranspose failed on groups with several output channels, so the check was NOT RUN)."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import lrpc
from lrpc.verify.float64 import run_double


def _model(nodes, inits, in_shape, out_shape=None):
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


CASES = [  # groups, in/out channels per group, stride, pad, output padding, bias
    c for c in itertools.product([1, 2, 4], [1, 3], [1, 2], [1, 2], [0, 1], [0, 1], [False, True]) if c[5] < c[3]
]


@pytest.mark.parametrize("groups, c_in, c_out, stride, pad, out_pad, bias", CASES)
def test_grouped_conv_transpose_equals_onnxruntime(groups, c_in, c_out, stride, pad, out_pad, bias):
    rng = np.random.default_rng(groups * 100 + c_in * 10 + c_out)
    inits = {"w": rng.normal(size=(groups * c_in, c_out, 3, 3)), "b": rng.normal(size=groups * c_out)}
    node = helper.make_node(
        "ConvTranspose",
        ["x", "w", "b"] if bias else ["x", "w"],
        ["y"],
        group=groups,
        strides=[stride] * 2,
        pads=[pad] * 4,
        output_padding=[out_pad] * 2,
    )
    model = _model([node], inits if bias else {"w": inits["w"]}, (groups * c_in, 5, 4))
    x = rng.normal(size=(2, groups * c_in, 5, 4)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = run_double(model, {"x": x}, ["y"])["y"]
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_verify_runs_float64_on_a_grouped_conv_model():
    """ResNeXt's shape: a grouped 3×3 conv with 4 channels per group; its adjoint is a grouped ConvTranspose."""
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.normal(0, 0.5, (8, 3, 3, 3)),
        "w2": rng.normal(0, 0.5, (8, 4, 3, 3)),
        "b2": rng.normal(0, 0.1, 8),
        "wd": rng.normal(0, 0.5, (3, 8)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h1"], pads=[1] * 4),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["h2"], pads=[1] * 4, group=2),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wd"], ["y"], transB=1),
    ]
    explained = lrpc.compile(_model(nodes, inits, (3, 8, 8), ["N", 3]), rule="epsilon")
    grouped = [n for n in explained.graph.node if n.op_type == "ConvTranspose" and any(a.i == 2 for a in n.attribute)]
    assert grouped, "the adjoint of the grouped conv is expected to be a grouped ConvTranspose"
    report = lrpc.verify(explained, samples=2)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["float64"] == "pass" and report.passed, report.text()
