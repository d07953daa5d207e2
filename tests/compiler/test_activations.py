"""Every element-wise op declared in compiler/activations.py, checked from its declaration alone: on a
single-node graph, lrpc's gradient g ⊙ f′(x) (--method gradient, a random mask g) against central
differences of onnxruntime's own forward, (f(x + h) − f(x − h))/2h, at the points away from a kink.

A point is near a kink (ReLU's 0, Clip's bounds, a jump) where the differences at h and h/2 disagree;
those are left out (and those where f is not finite: Log, Sqrt of x < 0); at least a third must remain.
The graph's output is the op itself, so an output Sigmoid is kept (keep_output_activation).
tests/keras/test_savedmodel_activations.py runs the same graphs through the TensorFlow expressions.
A new declaration is covered without a new case; an op with more inputs than x takes them from
EXTRA_INPUTS."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lrpc
from lrpc.activations import ELEMENTWISE

SHAPE = (2, 60)
OPSET = 24  # Swish's; every declared op exists there
EXTRA_INPUTS = {  # op → its constant inputs after x
    "PRelu": [np.linspace(-0.5, 0.5, SHAPE[1])],
    "Clip": [np.array(-1.0), np.array(2.0)],
    "Pow": [np.array(3.0)],
}


def declared_model(op: str) -> tuple[onnx.ModelProto, dict]:
    """y = op(x, *EXTRA_INPUTS[op]) with the op's default attributes, and x = ±U(0.2, 3)."""
    extras = [numpy_helper.from_array(v.astype(np.float32), f"c{i}") for i, v in enumerate(EXTRA_INPUTS.get(op, []))]
    node = helper.make_node(op, ["x", *[t.name for t in extras]], ["y"], name=op)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        extras,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    rng = np.random.default_rng(sum(map(ord, op)))
    x = rng.choice([-1.0, 1.0], SHAPE) * rng.uniform(0.2, 3.0, SHAPE)
    return model, {"x": x.astype(np.float32)}


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _central(forward, x, h):
    return (forward(x + h) - forward(x - h)) / (2 * h)


@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
def test_declared_derivative_matches_finite_differences(op):
    model, feeds = declared_model(op)
    x = feeds["x"].astype(np.float64)
    g = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    explained = lrpc.compile(model, method="gradient", target="mask", keep_output_activation=True)
    got = _run(explained, {"x": feeds["x"], "mask": g})[1]

    def forward(v):
        return _run(model, {"x": v.astype(np.float32)})[0].astype(np.float64)

    coarse, fine = _central(forward, x, 2e-2), _central(forward, x, 1e-2)
    smooth = np.isfinite(coarse) & np.isfinite(fine) & (np.abs(coarse - fine) <= 1e-3 * np.maximum(1.0, np.abs(fine)))
    assert smooth.mean() >= 1 / 3, f"{op}: only {smooth.mean():.0%} of the points are away from a kink"
    want = (g * fine)[smooth]
    assert np.linalg.norm(got[smooth] - want) <= 2e-3 * np.linalg.norm(want), op


@pytest.mark.parametrize("bounds", [(-1.0, 2.0), (0.0, 6.0), (None, 6.0), (0.0, None)], ids=str)
def test_clip_derivative_at_its_bounds_is_exact(bounds):
    """f′ = [lo < x < hi] exactly, also one float away from a bound and at it (PyTorch's 0 there)."""
    lo, hi = bounds
    names = [("lo", lo), ("hi", hi)]
    extras = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in names if v is not None]
    inputs = ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""]
    graph = helper.make_graph(
        [helper.make_node("Clip", inputs, ["y"])],
        "clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24])],
        extras,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    edges = [np.float32(v) for v in (lo, hi) if v is not None]
    x = np.array(
        [e2 for e in edges for e2 in (e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf))]
        + [-1e30, -3.0, -1e-45, 0.0, 1e-45, 0.5, 1.5, 5.9, 7.0, 1e30, np.inf, -np.inf],
        np.float32,
    )
    x = np.resize(x, (1, 24))
    explained = lrpc.compile(model, method="gradient", target="mask", keep_output_activation=True)
    got = _run(explained, {"x": x, "mask": np.full((1, 24), 3.0, np.float32)})[1]
    inside = ((x > lo) if lo is not None else True) & ((x < hi) if hi is not None else True)
    np.testing.assert_array_equal(np.abs(got), 3.0 * inside)
