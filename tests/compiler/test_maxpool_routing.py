"""MaxPool's relevance goes to each window's first maximum, by MaxUnpool where windows never overlap and
by a scatter-add elsewhere (rules/pooling.py): both against the float64 oracle's window lists, on pads,
ceil mode, dilations, auto_pad, 1-D and 3-D pools, ties of positive values, float64 models.

Model: x → MaxPool → Flatten → MatMul (4 logits), ε = 1e-6; the oracle routes the MatMul's ε relevance
to the winners it finds itself (oracle.maxpool_layer: padded positions never win, first maximum on ties).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lrpc
import oracle

EPS = 1e-6

# (input shape, MaxPool attributes, oracle pads (ceil_mode and auto_pad as explicit pads), MaxUnpool expected)
CASES = [
    pytest.param([2, 3, 8, 6], dict(kernel_shape=[2, 2], strides=[2, 2]), [0, 0, 0, 0], True, id="2x2s2"),
    pytest.param([2, 3, 7, 7], dict(kernel_shape=[2, 2], strides=[2, 2]), [0, 0, 0, 0], True, id="2x2s2-odd"),
    pytest.param(
        [2, 3, 7, 8], dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1]), [1, 1, 1, 1], True, id="3x3s3-pads"
    ),
    pytest.param(
        [2, 3, 9, 9], dict(kernel_shape=[2, 2], strides=[3, 3], dilations=[2, 2]), [0, 0, 0, 0], True, id="dilated-gaps"
    ),
    pytest.param(
        [2, 3, 8, 8],
        dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
        [0, 0, 0, 0],
        True,
        id="same-upper",
    ),
    pytest.param([2, 3, 11], dict(kernel_shape=[2], strides=[2]), [0, 0], True, id="1d"),
    pytest.param([1, 2, 4, 6, 6], dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2]), [0, 0, 0, 0, 0, 0], True, id="3d"),
    pytest.param(
        [2, 3, 7, 7],
        dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER"),
        [1, 1, 0, 0],
        True,
        id="same-lower",
    ),
    pytest.param(
        [2, 3, 6, 7], dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]), [1, 1, 1, 1], True, id="2x2s2-pads"
    ),
    # MaxUnpool would need an output larger than x ((out − 1)·s + k − pads > in): onnxruntime refuses it
    pytest.param(
        [2, 3, 5, 6], dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), [0, 0, 1, 0], False, id="ceil-mode"
    ),
    pytest.param(
        [2, 3, 7, 8], dict(kernel_shape=[2, 2], strides=[3, 3], ceil_mode=1), [0, 0, 1, 0], False, id="ceil-mode-gaps"
    ),
    # overlapping windows: one input can win two outputs, their relevance sums
    pytest.param(
        [2, 3, 8, 8],
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        [1, 1, 1, 1],
        False,
        id="3x3s2-overlap",
    ),
    pytest.param([2, 3, 6, 6], dict(kernel_shape=[2, 2], strides=[1, 1]), [0, 0, 0, 0], False, id="2x2s1-overlap"),
]


def _model(shape, attrs, dtype, classes=4):
    x = np.zeros(shape, np.float32)
    pooled = ort.InferenceSession(
        helper.make_model(
            helper.make_graph(
                [helper.make_node("MaxPool", ["x"], ["y"], **attrs)],
                "p",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            ),
            opset_imports=[helper.make_opsetid("", 18)],
            ir_version=9,
        ).SerializeToString(),
        providers=["CPUExecutionProvider"],
    ).run(None, {"x": x})[0]
    features = int(np.prod(pooled.shape[1:]))
    w = np.random.default_rng(1).standard_normal((features, classes)).astype(helper.tensor_dtype_to_np_dtype(dtype))
    graph = helper.make_graph(
        [
            helper.make_node("MaxPool", ["x"], ["y"], name="pool", **attrs),
            helper.make_node("Flatten", ["y"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["logits"], name="head"),
        ],
        "pool",
        [helper.make_tensor_value_info("x", dtype, ["n", *shape[1:]])],
        [helper.make_tensor_value_info("logits", dtype, ["n", classes])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), w


def _oracle(x, w, attrs, pads):
    """ε relevance of each sample's largest logit, routed to the winners the oracle finds (float64)."""
    nd = len(attrs["kernel_shape"])
    pool, _ = oracle.maxpool_layer(
        x.shape[1:], attrs["kernel_shape"], attrs.get("strides"), pads, attrs.get("dilations")
    )
    w = w.astype(np.float64)
    result = []
    for sample in x.astype(np.float64):
        flat = sample.ravel()
        f = pool.forward(flat)
        z = f @ w
        target = np.zeros_like(z)
        target[z.argmax()] = z.max()
        r_f = f * (w @ (target / (z + EPS * np.where(z >= 0, 1.0, -1.0))))
        result.append(pool.relevance(flat, r_f, None).reshape(sample.shape))
    assert nd == len(x.shape) - 2
    return np.stack(result)


def _inputs(shape, dtype):
    x = np.maximum(np.random.default_rng(0).standard_normal(shape), 0.0)  # ReLU-like: ties at 0
    x[:, :, :2] = 1.5  # ties of a positive value: the first maximum takes all
    return x.astype(helper.tensor_dtype_to_np_dtype(dtype))


@pytest.mark.parametrize(("shape", "attrs", "pads", "unpooled"), CASES)
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.DOUBLE], ids=["float32", "float64"])
def test_relevance_reaches_the_first_maximum(shape, attrs, pads, unpooled, dtype):
    model, w = _model(shape, attrs, dtype)
    explained = lrpc.compile(model, rule=f"epsilon:eps={EPS}")
    ops = {n.op_type for n in explained.graph.node}
    assert ("MaxUnpool" in ops) == (unpooled and dtype == TensorProto.FLOAT), ops  # onnxruntime: no float64 kernel
    assert ("ScatterElements" in ops) != ("MaxUnpool" in ops)
    x = _inputs(shape, dtype)
    session = ort.InferenceSession(explained.SerializeToString(), providers=["CPUExecutionProvider"])
    relevance = session.run(["relevance"], {"x": x})[0]
    expected = _oracle(x, w, attrs, pads)
    assert np.abs(relevance - expected).max() <= 1e-5 * np.abs(expected).max()
    logits = session.run(["logits"], {"x": x})[0].astype(np.float64)
    np.testing.assert_allclose(relevance.reshape(len(x), -1).sum(1), logits.max(1), rtol=1e-4)  # conservation


def test_unknown_spatial_dims_scatter():
    """Without static spatial dims the output-shape condition cannot be checked: the scatter routes."""
    model, _ = _model([2, 3, 8, 8], dict(kernel_shape=[2, 2], strides=[2, 2]), TensorProto.FLOAT)
    graph = model.graph
    graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, "w"]))
    graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((48, 4), np.float32), "w"))
    del graph.value_info[:]
    ops = {n.op_type for n in lrpc.compile(onnx.shape_inference.infer_shapes(model), rule="epsilon").graph.node}
    assert "ScatterElements" in ops and "MaxUnpool" not in ops
