"""`lrpc verify`'s float64 MaxPool (compiler/verify/reference_maxpool.py) against onnxruntime's, values and
indices, ties included; and `lrpc verify` on a padded max pool, where onnx's reference MaxPool put
the relevance into the wrong channel (a 1e306 "difference")."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import lrpc
from lrpc.verify.reference_maxpool import max_pool
from lrpc.verify import verify
from nets import make_model, tensor

CASES = {  # name: (input shape, MaxPool attributes)
    "2d 3x3/1 pads 1": ((2, 3, 5, 6), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "2d 2x2/2": ((1, 4, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "2d 3x3/2 pads 1 (ResNet)": ((2, 2, 9, 8), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "2d uneven pads": ((1, 2, 7, 5), dict(kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 1, 2])),
    "2d dilated": ((1, 2, 8, 8), dict(kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 2])),
    "2d ceil_mode": ((1, 2, 7, 7), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    "2d ceil_mode pads": ((1, 1, 6, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    "2d SAME_UPPER": ((1, 3, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER")),
    "2d SAME_LOWER": ((1, 3, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_LOWER")),
    "2d VALID": ((1, 2, 7, 6), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID")),
    "1d pads": ((2, 3, 9), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
    "3d": ((1, 2, 4, 5, 6), dict(kernel_shape=[2, 2, 3], strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 1])),
}


def onnxruntime_max_pool(x, attributes):
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attributes)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_values_and_indices_match_onnxruntime(case, ties):
    shape, attributes = CASES[case]
    rng = np.random.default_rng(0)
    x = (rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)).astype(np.float32)
    y, indices = onnxruntime_max_pool(x, attributes)
    attributes = dict(attributes)
    got_y, got_i = max_pool(x.astype(np.float64), attributes.pop("kernel_shape"), **attributes)
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_array_equal(got_i, indices)


def test_verify_passes_on_a_padded_max_pool():
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fw"], ["logits"], transB=1),
    ]
    init = {
        "w": rng.standard_normal((8, 2, 3, 3)).astype(np.float32),
        "b": np.zeros(8, np.float32),
        "fw": rng.standard_normal((3, 8 * 4 * 4)).astype(np.float32),
    }
    model = make_model(nodes, [tensor("x", ["N", 2, 4, 4])], [tensor("logits", ["N", 3])], init)
    report = verify(lrpc.compile(model, rule="epsilon"))
    assert report.passed, report.text()


@pytest.mark.parametrize(
    "shape, kernel, stride, output_shape",
    [
        ((1, 2, 6, 6), 2, 2, None),
        ((2, 3, 4, 5), 2, 2, [2, 3, 8, 11]),
        ((1, 2, 3, 3), 1, 2, [1, 2, 6, 6]),  # ResNet50V2's 1×1/2 shortcut pool on an even map
    ],
)
def test_maxunpool_puts_each_value_at_its_index_in_the_given_shape(shape, kernel, stride, output_shape):
    """Against onnxruntime's MaxUnpool, with output_shape given (onnx's reference ignores it) or not."""
    from lrpc.verify.float64 import run_double

    rng = np.random.default_rng(3)
    full = output_shape or [*shape[:2], *[(d - 1) * stride + kernel for d in shape[2:]]]
    indices = np.stack(
        [rng.choice(int(np.prod(full[2:])), int(np.prod(shape[2:])), replace=False) for _ in range(shape[0] * shape[1])]
    ).reshape(shape)
    indices = indices + (np.arange(shape[0] * shape[1]) * int(np.prod(full[2:]))).reshape(*shape[:2], 1, 1)
    x = rng.standard_normal(shape).astype(np.float32)
    extra = ["shape"] if output_shape else []
    node = helper.make_node("MaxUnpool", ["x", "i", *extra], ["y"], kernel_shape=[kernel] * 2, strides=[stride] * 2)
    inits = {"shape": np.array(output_shape, np.int64)} if output_shape else {}
    model = make_model(
        [node], [tensor("x", list(shape)), tensor("i", list(shape), TensorProto.INT64)], [tensor("y", full)], inits
    )
    feeds = {"x": x, "i": indices.astype(np.int64)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = run_double(model, feeds, ["y"])["y"]
    assert got.shape == want.shape and np.array_equal(got, want.astype(np.float64))
