"""Every element-wise op declared in compiler/activations.py through its TensorFlow expression: the
single-node graph of tests/compiler/test_activations.py, and its explained gradient graph (the op and
the nodes of f′), traced by lrpc.savedmodel.build_module, against onnxruntime (max gap ≤ 1e-5·max|ORT|).
A new declaration is covered without a new case."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

import lrpc
from lrpc.activations import ELEMENTWISE
from lrpc.savedmodel import build_module

sys.path.insert(0, str(Path(__file__).parents[1] / "compiler"))
from test_activations import declared_model  # noqa: E402


def _both(model, feeds):
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    module, names = build_module(tf, model)
    got = module.serve(*[tf.constant(feeds[v.name]) for v in model.graph.input])
    return [(got[names["outputs"][v.name]].numpy(), w) for v, w in zip(model.graph.output, want)]


@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
@pytest.mark.parametrize("explained", [False, True], ids=["forward", "gradient"])
def test_declared_op_matches_onnxruntime(op, explained):
    model, feeds = declared_model(op)
    if explained:
        model = lrpc.compile(model, method="gradient", target="mask", keep_output_activation=True)
        feeds["mask"] = np.random.default_rng(1).normal(size=feeds["x"].shape).astype(np.float32)
    for got, want in _both(model, feeds):
        finite = np.isfinite(want)
        assert got.shape == want.shape and np.array_equal(finite, np.isfinite(got)), op
        assert np.abs(got - want)[finite].max() <= 1e-5 * np.abs(want[finite]).max(), op
