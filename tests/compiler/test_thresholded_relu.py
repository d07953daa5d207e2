"""ThresholdedRelu, y = x if x > α else 0 (the worked example of docs/adding-an-op.md), declared in
compiler/activations.py: its gradient against torch autograd of nn.Threshold(α, 0), the same map, and
LRP-ε through Gemm → ThresholdedRelu → Gemm against the rule written out in numpy, float64:

    R_a = a ⊙ W₁(R_y / stab(z_y)),   R_h = R_a (the activation passes it),   R_x = x ⊙ W₀(R_h / stab(h))

with stab(z) = z + ε·sign₀(z) and R_y the explained logit's value (lrpc's convention); bias-free, the map
sums to that logit."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lrpc

EPS = 1e-6


def _model(nodes, shape_in, shape_out, initializers=()):
    graph = helper.make_graph(
        nodes,
        "thresholded_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in initializers],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("alpha", [None, 0.5, -0.25])
def test_gradient_matches_torch_threshold(alpha):
    torch = pytest.importorskip("torch")
    attrs = {} if alpha is None else {"alpha": alpha}
    node = helper.make_node("ThresholdedRelu", ["x"], ["y"], **attrs)
    model = _model([node], [2, 3, 5], [2, 3, 5])
    rng = np.random.default_rng(0)
    x, w = (2 * rng.standard_normal((2, 3, 5))).astype(np.float32), rng.standard_normal((2, 3, 5)).astype(np.float32)
    got = _run(lrpc.compile(model, method="gradient", target="mask"), {"x": x, "mask": w})[1]
    xx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    threshold = torch.nn.Threshold(1.0 if alpha is None else alpha, 0.0)
    (threshold(xx) * torch.tensor(w, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(got, xx.grad.numpy(), atol=1e-7)


def _stab(z):
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def _epsilon_by_hand(x, w0, b0, w1, b1, alpha):
    h = x @ w0 + b0
    a = np.where(h > alpha, h, 0.0)
    z = a @ w1 + b1
    start = np.zeros_like(z)
    rows = np.arange(len(z))
    start[rows, z.argmax(1)] = z[rows, z.argmax(1)]
    r_a = a * ((start / _stab(z)) @ w1.T)
    return x * ((r_a / _stab(h)) @ w0.T), z


@pytest.mark.parametrize("bias", [True, False])
def test_epsilon_passes_the_activation(bias):
    rng = np.random.default_rng(1)
    w0, w1 = rng.standard_normal((6, 8)), rng.standard_normal((8, 4))
    b0, b1 = (rng.standard_normal(8), rng.standard_normal(4)) if bias else (np.zeros(8), np.zeros(4))
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["h"]),
        helper.make_node("ThresholdedRelu", ["h"], ["a"], alpha=0.3),
        helper.make_node("Gemm", ["a", "w1", "b1"], ["y"]),
    ]
    model = _model(nodes, [3, 6], [3, 4], [("w0", w0), ("b0", b0), ("w1", w1), ("b1", b1)])
    x = rng.standard_normal((3, 6)).astype(np.float32)
    got = _run(lrpc.compile(model, rule="epsilon"), {"x": x})[1]
    want, z = _epsilon_by_hand(x.astype(np.float64), w0, b0, w1, b1, 0.3)
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)
    if not bias:
        np.testing.assert_allclose(got.sum(1), z.max(1), rtol=1e-5)
