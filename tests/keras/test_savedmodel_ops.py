"""The SavedModel export's op table, entry by entry, against onnxruntime on single-node graphs.

Each case is one ONNX node with the attribute variants lrpc's graphs use (and their neighbours: pads,
groups, dilations, ceil mode, auto_pad, MaxPool's indices and ties, every Resize mode, Pad modes, negative
Slice steps, ScatterElements with duplicate indices, …). Data inputs have a symbolic first dimension, as in
an explained graph; constant inputs are initializers. The node is traced by lrpc.savedmodel.build_module
(the export without saving) and its outputs must equal onnxruntime's (float: max gap ≤ 1e-5·max|ORT|;
integers: equal).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from onnx import TensorProto, helper, numpy_helper

from lrpc.savedmodel import build_module

RNG = np.random.default_rng(0)
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def ints(*values):
    return np.array(values, np.int64)


def data(array):
    return ("data", array)


def const(array):
    return ("const", array)


def case(op, inputs, outputs=(F,), **attrs):
    """A single-node case: inputs as data(...)/const(...)/None (omitted), output types, attributes."""
    return pytest.param(op, inputs, outputs, attrs, id=f"{op}-{'-'.join(f'{k}={v}' for k, v in attrs.items())}"[:90])


def unpool_indices():
    """Flat NCHW positions in [2, 3, 8, 8] of one winner per 2×2 window (each window's own corner)."""
    n, c, i, j = np.meshgrid(*map(np.arange, (2, 3, 4, 4)), indexing="ij")
    return (((n * 3 + c) * 8 + 2 * i + i % 2) * 8 + 2 * j + (i + j) % 2).astype(np.int64)


TIES = np.floor(RNG.uniform(0, 3, (2, 3, 6, 6))).astype(np.float32)  # many equal maxima per window

CASES = [
    # convolution
    case(
        "Conv",
        [data(rand(2, 4, 9, 8)), const(rand(6, 2, 3, 3)), const(rand(6))],
        group=2,
        strides=[2, 2],
        dilations=[2, 2],
        pads=[1, 0, 2, 1],
    ),
    case("Conv", [data(rand(2, 3, 7, 7)), const(rand(6, 1, 3, 3))], group=3, auto_pad="SAME_UPPER"),
    case("Conv", [data(rand(2, 3, 7, 7)), const(rand(3, 1, 2, 2))], group=3, strides=[2, 1], pads=[1, 1, 0, 0]),
    case("Conv", [data(rand(2, 3, 11)), const(rand(4, 3, 3)), const(rand(4))], auto_pad="SAME_LOWER", strides=[2]),
    case("Conv", [data(rand(2, 3, 9)), const(rand(4, 3, 3))], dilations=[2], pads=[2, 1]),
    case("Conv", [data(rand(1, 2, 5, 6, 4)), const(rand(3, 2, 2, 3, 2))], pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 1]),
    case("Conv", [data(rand(2, 3, 7, 7)), const(rand(4, 3, 3, 3))], auto_pad="VALID", strides=[2, 2]),
    case(
        "ConvTranspose",
        [data(rand(2, 4, 5, 4)), const(rand(4, 3, 3, 2)), const(rand(6))],
        group=2,
        strides=[2, 2],
        output_padding=[1, 1],
        pads=[1, 0, 0, 1],
        dilations=[2, 1],
    ),
    case("ConvTranspose", [data(rand(2, 3, 5, 5)), const(rand(3, 2, 3, 3))], strides=[2, 2], auto_pad="SAME_UPPER"),
    case("ConvTranspose", [data(rand(2, 3, 5, 5)), const(rand(3, 2, 3, 3))], strides=[2, 2], auto_pad="SAME_LOWER"),
    case("ConvTranspose", [data(rand(2, 3, 4, 4)), const(rand(3, 2, 3, 3))], strides=[2, 2], output_shape=[10, 9]),
    case("ConvTranspose", [data(rand(2, 3, 6)), const(rand(3, 2, 4)), const(rand(2))], strides=[3], pads=[1, 2]),
    # pooling
    case("MaxPool", [data(rand(2, 3, 9, 8))], (F, I64), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    case("MaxPool", [data(rand(2, 3, 7, 7))], (F, I64), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    case("MaxPool", [data(rand(2, 3, 9, 9))], (F,), kernel_shape=[2, 3], dilations=[2, 2], pads=[0, 1, 1, 0]),
    case("MaxPool", [data(rand(2, 3, 9, 9))], (F, I64), kernel_shape=[2, 2], dilations=[2, 1], strides=[1, 2]),
    case("MaxPool", [data(rand(2, 3, 10))], (F, I64), kernel_shape=[3], strides=[2], auto_pad="SAME_UPPER"),
    case("MaxPool", [data(TIES)], (F, I64), kernel_shape=[3, 3], strides=[1, 1]),
    case("MaxPool", [data(rand(2, 3, 8, 8))], (F,), kernel_shape=[2, 2], strides=[2, 2]),
    case(
        "MaxUnpool",
        [data(rand(2, 3, 4, 4)), const(unpool_indices()), const(ints(2, 3, 8, 8))],
        kernel_shape=[2, 2],
        strides=[2, 2],
    ),
    case("GlobalMaxPool", [data(rand(2, 3, 5, 4))]),
    case("GlobalAveragePool", [data(rand(2, 3, 5, 4))]),
    # resizing
    case(
        "Resize",
        [data(rand(2, 3, 4, 5)), None, const(np.array([1, 1, 2, 2], np.float32))],
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    ),
    case("Resize", [data(rand(2, 3, 4, 5)), None, const(np.array([1, 1, 1.5, 2], np.float32))], mode="linear"),
    case(
        "Resize",
        [data(rand(2, 3, 4, 5)), None, None, const(ints(2, 3, 7, 3))],
        mode="linear",
        coordinate_transformation_mode="align_corners",
    ),
    case(
        "Resize",
        [data(rand(2, 3, 4, 5)), None, const(np.array([1, 1, 2, 1.5], np.float32))],
        mode="cubic",
        cubic_coeff_a=-0.5,
        coordinate_transformation_mode="asymmetric",
    ),
    case(
        "Resize",
        [data(rand(2, 3, 8, 6)), None, const(np.array([1, 1, 0.5, 0.5], np.float32))],
        mode="nearest",
        nearest_mode="round_prefer_ceil",
    ),
    # dense
    case("Gemm", [data(rand(5, 3)), const(rand(5, 4)), const(rand(4))], transA=1, alpha=0.5, beta=2.0),
    case("Gemm", [data(rand(3, 5)), const(rand(4, 5))], transB=1),
    case("MatMul", [data(rand(2, 3, 5)), const(rand(5, 4))]),
    # element-wise
    *[
        case(op, [data(rand(3, 4))], **attrs)
        for op, attrs in [
            ("LeakyRelu", {"alpha": 0.1}),
            ("Elu", {"alpha": 0.9}),
            ("Celu", {"alpha": 1.3}),
            ("Selu", {}),
            ("HardSigmoid", {"alpha": 1 / 6}),
            ("Softplus", {}),
            ("Erf", {}),
            ("Sign", {}),
            ("Abs", {}),
            ("Neg", {}),
            ("Sigmoid", {}),
            ("Tanh", {}),
            ("Exp", {}),
            ("Relu", {}),
            ("Softmax", {"axis": 1}),
            ("LogSoftmax", {"axis": 1}),
            ("Identity", {}),
        ]
    ],
    case("PRelu", [data(rand(2, 3, 4)), const(rand(3, 1))]),
    case("Clip", [data(rand(3, 4)), const(np.float32(-0.5)), const(np.float32(0.5))]),
    case("Clip", [data(rand(3, 4)), None, const(np.float32(0.2))]),
    case("Sqrt", [data(np.abs(rand(3, 4)))]),
    case("Log", [data(np.abs(rand(3, 4)) + 0.1)]),
    case("Reciprocal", [data(rand(3, 4) + 5)]),
    case("Pow", [data(np.abs(rand(3, 4))), const(np.float32(2.0))]),
    case("Div", [data(rand(3, 4)), const(rand(4) + 3)]),
    case("Sum", [data(rand(3, 4)), const(rand(4)), const(rand(3, 1))]),
    case("Max", [data(rand(3, 4)), const(rand(4))]),
    case("Min", [data(rand(3, 4)), const(rand(4))]),
    case("Max", [data(rand(3, 4)), const(rand(3, 1)), const(np.float32(0.1))]),  # three inputs, broadcast
    case("Pow", [data(np.abs(rand(3, 4)) + 0.5), const(rand(4))]),  # a tensor exponent, not only x²
    case("Where", [data(rand(3, 4) > 0), const(np.float32(0.25)), const(np.float32(-0.25))]),
    case("Equal", [data(np.round(rand(3, 4))), const(np.float32(0))], (TensorProto.BOOL,)),
    case("And", [data(rand(3, 4) > 0), const(np.array([True, False, True, True]))], (TensorProto.BOOL,)),
    case("Cast", [data(rand(3, 4) * 3)], (I64,), to=I64),
    # reductions and selection
    case("ReduceSum", [data(rand(2, 3, 4)), const(ints(1, 2))], keepdims=0),
    case("ReduceSum", [data(rand(2, 3, 4)), data(ints(0, 2))], keepdims=1, noop_with_empty_axes=1),  # run-time axes
    case("ReduceSum", [data(rand(2, 3, 4)), data(ints())], keepdims=1, noop_with_empty_axes=1),
    case("NonZero", [data(np.array([[0, 1, 2], [3, 0, 0]], np.float32))], outputs=(I64,)),
    case("NonZero", [data(np.array([True, False, True]))], outputs=(I64,)),
    case("ReduceMax", [data(rand(2, 3, 4, 5))], axes=[1, 3], keepdims=0),
    case("ReduceMean", [data(rand(2, 3, 4))], axes=[1], keepdims=1),
    case("ArgMax", [data(np.round(rand(3, 5)))], (I64,), axis=1, keepdims=0),
    case("ArgMax", [data(rand(3, 5))], (I64,), axis=-1, keepdims=1),
    case("TopK", [data(rand(3, 6)), const(ints(2))], (F, I64), axis=1, largest=0),
    case("TopK", [data(rand(3, 6, 2)), const(ints(3))], (F, I64), axis=1),
    # shape and routing
    case("Shape", [data(rand(2, 3, 4))], (I64,), start=1),
    case("Shape", [data(rand(2, 3, 4))], (I64,), start=1, end=2),
    case("Size", [data(rand(2, 3, 4))], (I64,)),
    case("Reshape", [data(rand(2, 3, 4)), const(ints(0, -1, 2))]),
    case("Flatten", [data(rand(2, 3, 4, 2))], axis=2),
    case("Squeeze", [data(rand(2, 1, 4)), const(ints(1))]),
    case("Unsqueeze", [data(rand(2, 4)), const(ints(-1, 1))]),
    case("Transpose", [data(rand(2, 3, 4, 5))], perm=[0, 2, 3, 1]),
    case("Concat", [data(rand(2, 3)), const(rand(1, 3))], axis=0),
    case("Split", [data(rand(2, 7)), const(ints(2, 5))], (F, F), axis=1),
    case("Split", [data(rand(2, 6))], (F, F, F), axis=1),
    case(
        "Slice",
        [data(rand(2, 6, 5)), const(ints(-1, 1)), const(ints(-100, 100)), const(ints(1, 2)), const(ints(-2, 2))],
    ),
    case("Slice", [data(rand(2, 6, 5)), const(ints(1)), const(ints(4)), const(ints(1))]),
    case("Gather", [data(rand(2, 5, 3)), const(ints(-1, 0, 2))], axis=1),
    case("GatherElements", [data(rand(2, 5)), const(np.array([[4, 0], [1, -1]], np.int64))], axis=1),
    case("GatherND", [data(rand(2, 3, 4)), const(np.array([[0, 1], [1, 2]], np.int64))]),
    case(
        "ScatterElements",
        [data(rand(2, 5)), const(np.array([[1, 1, 3], [0, 0, 0]], np.int64)), const(rand(2, 3))],
        axis=1,
        reduction="add",
    ),
    case("ScatterElements", [data(rand(3, 4)), const(np.array([[2, 0, 1, 0]], np.int64)), const(rand(1, 4))], axis=0),
    case("Expand", [data(rand(2, 1, 4)), const(ints(3, 1))]),
    case("Tile", [data(rand(2, 3)), const(ints(1, 2))]),
    case("Pad", [data(rand(2, 3, 4)), const(ints(0, 1, 2, 0, 2, 1)), const(np.float32(0.5))], mode="constant"),
    case("Pad", [data(rand(2, 3, 4)), const(ints(0, 2, 1, 0, 1, 3))], mode="reflect"),
    case("Pad", [data(rand(2, 3, 4)), const(ints(0, 2, 1, 0, 1, 3))], mode="edge"),
    case("Pad", [data(rand(2, 3, 4)), const(ints(0, -1, 2, 0, 1, -1))]),
    case(
        "ConstantOfShape",
        [
            data(np.ones((2, 3), np.float32)),
        ],
        (F,),
    ),
    case("EyeLike", [data(rand(4, 5))], k=1),
    case("Range", [const(np.float32(0.5)), data(np.float32(4)), const(np.float32(1.5))]),
]


def single_node_model(op, inputs, outputs, attrs) -> tuple[onnx.ModelProto, dict]:
    names, graph_inputs, feeds, inits = [], [], {}, []
    for i, item in enumerate(inputs):
        if item is None:
            names.append("")
            continue
        kind, array = item
        array = np.asarray(array)
        name = f"in{i}"
        names.append(name)
        if kind == "const":
            inits.append(numpy_helper.from_array(array, name))
        else:
            dims = ["N", *array.shape[1:]] if array.ndim else []
            graph_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), dims))
            feeds[name] = array
    if op == "ConstantOfShape":  # its input is a shape: feed the data tensor's shape
        shape = helper.make_node("Shape", ["in0"], ["shape"])
        nodes = [shape, helper.make_node(op, ["shape"], ["out0"], **attrs)]
    else:
        nodes = [helper.make_node(op, names, [f"out{i}" for i in range(len(outputs))], name="node", **attrs)]
    outs = [helper.make_tensor_value_info(f"out{i}", t, None) for i, t in enumerate(outputs)]
    model = helper.make_model(
        helper.make_graph(nodes, "op", graph_inputs, outs, inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model, feeds


@pytest.mark.parametrize(("op", "inputs", "outputs", "attrs"), CASES)
def test_op_matches_onnxruntime(op, inputs, outputs, attrs):
    model, feeds = single_node_model(op, inputs, outputs, attrs)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    module, names = build_module(tf, model)
    got = module.serve(*[tf.constant(feeds[v.name]) for v in model.graph.input])
    for i, expected in enumerate(want):
        actual = got[names["outputs"][f"out{i}"]].numpy()
        assert actual.shape == expected.shape, f"output {i}: shape {actual.shape}, onnxruntime {expected.shape}"
        if expected.dtype.kind == "f":
            gap = np.abs(actual.astype(np.float64) - expected).max(initial=0) / max(
                np.abs(expected).max(initial=0), 1e-30
            )
            assert gap <= 1e-5, f"output {i}: relative gap {gap:.2e}"
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=f"output {i}")


def test_every_op_lrpc_explains_has_a_tensorflow_function():
    """An explained graph keeps the model's forward ops: each op with an LRP or gradient rule must be in the
    table (a rule added without one would make `--format savedmodel` refuse models `--format onnx` takes)."""
    from lrpc.methods.table import GRADIENTS
    from lrpc.rules.table import RULES
    from lrpc.savedmodel import op_table

    assert len(RULES) > 20 and len(GRADIENTS) > 20  # the tables are filled on import
    assert set(RULES) | set(GRADIENTS) <= set(op_table())
