"""Each canonization pass keeps the model's forward output (onnxruntime, relative error ≤ 1e-5)
and leaves the op it replaces behind: AveragePool/GlobalAveragePool/ReduceMean → depthwise Conv,
BatchNormalization → folded or a depthwise 1×1 Conv."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper
from nets import make_model, tensor

from lrpc.frontend import onnx as frontend
from lrpc.passes import prepare


def prepared(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    lines = []
    m = prepare(frontend.load(model), log=lines.append)
    proto = ir.serde.serialize_model(m)
    onnx.checker.check_model(proto, full_check=True)
    return proto, lines


def assert_same_forward(model, shape, seed=0):
    canon, lines = prepared(model)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    expected, actual = run(model), run(canon)
    assert actual.shape == expected.shape
    err = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
    assert err <= 1e-5, err
    return canon, lines


def ops(model):
    return [n.op_type for n in model.graph.node]


def one_node_model(op, x_shape, inits=None, extra_inputs=(), opset=17, **attrs):
    node = helper.make_node(op, ["x", *extra_inputs], ["y"], name="pool", **attrs)
    return with_output([node], x_shape, inits or {}, opset)


def with_output(nodes, x_shape, init, opset=17):
    """A model x → nodes → y, y's shape from onnx shape inference (the batch dim stays symbolic)."""
    initializers = [onnx.numpy_helper.from_array(a, n) for n, a in init.items()]
    probe = helper.make_model(
        helper.make_graph(nodes, "probe", [tensor("x", x_shape)], [tensor("y", None)], initializers),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=True).graph.output[0]
    y = [d.dim_value or d.dim_param for d in inferred.type.tensor_type.shape.dim]
    return make_model(nodes, [tensor("x", x_shape)], [tensor("y", y)], init, opset)


AVERAGE_POOLS = [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0),
    dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1], count_include_pad=0),
    dict(kernel_shape=[3, 2], strides=[2, 3], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=0),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[2, 2], strides=[1, 1], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[4, 4], strides=[3, 3], auto_pad="SAME_UPPER", count_include_pad=1),
    dict(kernel_shape=[3, 3], auto_pad="VALID"),
]


@pytest.mark.parametrize("attrs", AVERAGE_POOLS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("size", [7, 8])
def test_average_pool_becomes_a_depthwise_conv(attrs, size):
    model = one_node_model("AveragePool", ["N", 3, size, size], **attrs)
    canon, lines = assert_same_forward(model, (2, 3, size, size))
    assert "AveragePool" not in ops(canon)
    conv = next(n for n in canon.graph.node if n.op_type == "Conv")
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "group")) == 3
    assert any("depthwise Conv over 3 channels" in line for line in lines)


@pytest.mark.parametrize("dims", [[9], [5, 6, 7]], ids=["1d", "3d"])
def test_average_pool_in_1d_and_3d(dims):
    n = len(dims)
    attrs = dict(kernel_shape=[3] * n, strides=[2] * n, pads=[1] * 2 * n, count_include_pad=0)
    model = one_node_model("AveragePool", ["N", 2, *dims], **attrs)
    canon, _ = assert_same_forward(model, (3, 2, *dims))
    assert ops(canon)[0] == "Conv"


def test_average_pool_with_dilations_opset19():
    attrs = dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    model = one_node_model("AveragePool", ["N", 2, 8, 8], opset=19, **attrs)
    canon, _ = assert_same_forward(model, (2, 2, 8, 8))
    assert "AveragePool" not in ops(canon)


def test_padded_average_pool_with_dynamic_size_is_refused():
    from lrpc.errors import LrpcError

    model = one_node_model("AveragePool", ["N", 2, "H", "W"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    with pytest.raises(LrpcError, match="static spatial dims"):
        prepared(model)


def test_global_average_pool():
    model = one_node_model("GlobalAveragePool", ["N", 4, 5, 6])
    canon, _ = assert_same_forward(model, (2, 4, 5, 6))
    assert ops(canon) == ["Conv"]


REDUCE_MEANS = [  # (input shape, axes, keepdims)
    ([4, 5, 6], [2, 3], 1),
    ([4, 5, 6], [2, 3], 0),
    ([4, 5, 6], [-1, -2], 0),
    ([5, 6, 4], [1, 2], 0),  # channels-last, what tf2onnx writes for GlobalAveragePooling2D
    ([5, 6, 4], [1, 2], 1),
    ([4, 5, 6], [3], 0),  # one spatial axis: a [1, 6] window
    ([4, 7], [2], 1),
]


@pytest.mark.parametrize("shape,axes,keepdims", REDUCE_MEANS)
@pytest.mark.parametrize("opset", [17, 18])
def test_spatial_reduce_mean(shape, axes, keepdims, opset):
    extra, inits, attrs = (), {}, dict(keepdims=keepdims)
    if opset >= 18:
        extra, inits = ("axes",), {"axes": np.array(axes, np.int64)}
    else:
        attrs["axes"] = axes
    model = one_node_model("ReduceMean", ["N", *shape], inits, extra, opset, **attrs)
    canon, _ = assert_same_forward(model, (2, *shape))
    assert "ReduceMean" not in ops(canon)


def test_reduce_mean_over_channels_and_space_is_left_alone():
    model = one_node_model("ReduceMean", ["N", 4, 5, 6], axes=[1, 2, 3], keepdims=1)
    canon, _ = assert_same_forward(model, (2, 4, 5, 6))
    assert ops(canon) == ["ReduceMean"]


# ---------------------------------------------------------------------------------------------
# BatchNormalization
# ---------------------------------------------------------------------------------------------


def bn_params(rng, c, prefix="bn"):
    return {
        f"{prefix}.gamma": rng.uniform(0.5, 1.5, c).astype(np.float32),
        f"{prefix}.beta": rng.uniform(-0.5, 0.5, c).astype(np.float32),
        f"{prefix}.mean": rng.uniform(-0.5, 0.5, c).astype(np.float32),
        f"{prefix}.var": rng.uniform(0.5, 2.0, c).astype(np.float32),
    }


def bn_node(x, y, prefix="bn"):
    return helper.make_node(
        "BatchNormalization",
        [x] + [f"{prefix}.{p}" for p in ("gamma", "beta", "mean", "var")],
        [y],
        name=prefix,
        epsilon=1e-3,
    )


def layer(kind, rng, x, y, c_in, c_out, **attrs):
    """(node, initializers) of one linear layer reading x."""
    w = lambda *s: rng.standard_normal(s).astype(np.float32)
    if kind == "conv":
        g = attrs.get("group", 1)
        return helper.make_node("Conv", [x, f"{y}.w", f"{y}.b"], [y], name=y, **attrs), {
            f"{y}.w": w(c_out, c_in // g, 3, 3),
            f"{y}.b": w(c_out),
        }
    if kind == "conv_nobias":
        return helper.make_node("Conv", [x, f"{y}.w"], [y], name=y, **attrs), {f"{y}.w": w(c_out, c_in, 3, 3)}
    if kind == "convtranspose":
        g = attrs.get("group", 1)
        return helper.make_node("ConvTranspose", [x, f"{y}.w", f"{y}.b"], [y], name=y, **attrs), {
            f"{y}.w": w(c_in, c_out // g, 3, 3),
            f"{y}.b": w(c_out),
        }
    if kind == "gemm":
        tb = attrs.get("transB", 0)
        return helper.make_node("Gemm", [x, f"{y}.w", f"{y}.b"], [y], name=y, **attrs), {
            f"{y}.w": w(c_out, c_in) if tb else w(c_in, c_out),
            f"{y}.b": w(1, c_out),
        }
    if kind == "matmul":
        return helper.make_node("MatMul", [x, f"{y}.w"], [y], name=y), {f"{y}.w": w(c_in, c_out)}
    raise ValueError(kind)


SPATIAL = {"conv", "conv_nobias", "convtranspose"}
BN_AFTER = [
    ("conv", {}),
    ("conv", dict(group=2, pads=[1, 1, 1, 1])),
    ("conv_nobias", dict(strides=[2, 2])),
    ("convtranspose", dict(group=2, strides=[2, 2])),
    ("gemm", {}),
    ("gemm", dict(transB=1, alpha=0.5, beta=2.0)),
    ("matmul", {}),
]


@pytest.mark.parametrize("kind,attrs", BN_AFTER)
def test_batchnorm_after_a_layer_folds_into_it(kind, attrs):
    rng = np.random.default_rng(1)
    node, init = layer(kind, rng, "x", "z", 4, 6, **attrs)
    init.update(bn_params(rng, 6))
    nodes = [node, bn_node("z", "bnout"), helper.make_node("Relu", ["bnout"], ["y"])]
    shape = ["N", 4, 7, 7] if kind in SPATIAL else ["N", 4]
    model = with_output(nodes, shape, init)
    canon, lines = assert_same_forward(model, (2, *shape[1:]))
    assert "BatchNormalization" not in ops(canon)
    assert any("into the preceding" in line for line in lines), lines


BN_BEFORE = [
    ("conv", {}),
    ("conv", dict(group=2, strides=[2, 2])),
    ("gemm", {}),
    ("gemm", dict(transB=1, alpha=0.5, beta=2.0)),
    ("matmul", {}),
]


@pytest.mark.parametrize("kind,attrs", BN_BEFORE)
def test_batchnorm_before_a_layer_folds_into_it(kind, attrs):
    rng = np.random.default_rng(2)
    node, init = layer(kind, rng, "bnout", "y", 4, 6, **attrs)
    init.update(bn_params(rng, 4))
    shape = ["N", 4, 7, 7] if kind in SPATIAL else ["N", 4]
    model = with_output([bn_node("x", "bnout"), node], shape, init)
    canon, lines = assert_same_forward(model, (2, *shape[1:]))
    assert "BatchNormalization" not in ops(canon)
    assert any("into the following" in line for line in lines), lines


@pytest.mark.parametrize("case", ["before_padded_conv", "alone_4d", "alone_2d", "between_relus"])
def test_batchnorm_without_a_foldable_neighbour_becomes_a_depthwise_conv(case):
    rng = np.random.default_rng(3)
    init = bn_params(rng, 4)
    shape = ["N", 4] if case == "alone_2d" else ["N", 4, 6, 6]
    if case == "before_padded_conv":
        node, more = layer("conv", rng, "bnout", "y", 4, 5, pads=[1, 1, 1, 1])
        init.update(more)
        nodes = [bn_node("x", "bnout"), node]
    elif case == "between_relus":
        nodes = [
            helper.make_node("Relu", ["x"], ["r"]),
            bn_node("r", "bnout"),
            helper.make_node("Relu", ["bnout"], ["y"]),
        ]
    else:
        nodes = [bn_node("x", "y")]
    canon, lines = assert_same_forward(with_output(nodes, shape, init), (3, *shape[1:]))
    assert "BatchNormalization" not in ops(canon)
    assert any("depthwise 1×1 Conv" in line for line in lines), lines
    depthwise = [n for n in canon.graph.node if n.op_type == "Conv" and n.name == "bn"]
    assert helper.get_attribute_value(next(a for a in depthwise[0].attribute if a.name == "group")) == 4


def test_batchnorm_that_is_the_graph_output_keeps_its_name():
    rng = np.random.default_rng(4)
    node, init = layer("gemm", rng, "x", "z", 4, 3)
    init.update(bn_params(rng, 3))
    canon, _ = assert_same_forward(with_output([node, bn_node("z", "y")], ["N", 4], init), (2, 4))
    assert [o.name for o in canon.graph.output] == ["y"] and ops(canon) == ["Gemm"]


# ---------------------------------------------------------------------------------------------
# Per-channel constant Mul/Add/Sub/Div (tf2onnx's BatchNormalization) and input normalization
# ---------------------------------------------------------------------------------------------


def affine_nodes(x, y, ops_, consts, prefix="aff"):
    nodes, init, cur = [], {}, x
    for i, (op, c) in enumerate(zip(ops_, consts)):
        out = y if i == len(ops_) - 1 else f"{prefix}{i}"
        nodes.append(helper.make_node(op, [cur, f"{prefix}.c{i}"], [out], name=f"{prefix}_{op}{i}"))
        init[f"{prefix}.c{i}"] = c.astype(np.float32)
        cur = out
    return nodes, init


AFFINE_AFTER = [
    ("conv", ["Mul", "Add"], (1, 6, 1, 1)),
    ("conv", ["Div", "Sub"], (6, 1, 1)),
    ("gemm", ["Mul", "Add"], (6,)),
    ("matmul", ["Add", "Mul", "Add"], (1, 6)),
    ("conv", ["Mul"], ()),
]


@pytest.mark.parametrize("kind,ops_,cshape", AFFINE_AFTER)
def test_per_channel_constants_after_a_layer_fold_into_it(kind, ops_, cshape):
    rng = np.random.default_rng(5)
    node, init = layer(kind, rng, "x", "z", 4, 6)
    more_nodes, more = affine_nodes("z", "a", ops_, [rng.uniform(0.5, 1.5, cshape) for _ in ops_])
    init.update(more)
    shape = ["N", 4, 7, 7] if kind in SPATIAL else ["N", 4]
    model = with_output([node, *more_nodes, helper.make_node("Relu", ["a"], ["y"])], shape, init)
    canon, lines = assert_same_forward(model, (2, *shape[1:]))
    assert not set(ops_) & set(ops(canon)), ops(canon)
    assert sum("into the preceding" in line for line in lines) == len(ops_)


@pytest.mark.parametrize("transpose", [False, True])
def test_per_channel_constants_before_a_layer_fold_into_it(transpose):
    rng = np.random.default_rng(6)
    shape = ["N", 7, 7, 4] if transpose else ["N", 4, 7, 7]
    cshape = (4,) if transpose else (4, 1, 1)
    nodes, init = affine_nodes("x", "a", ["Sub", "Div"], [rng.uniform(0.5, 1.5, cshape) for _ in range(2)])
    conv_in = "a"
    if transpose:
        nodes.append(helper.make_node("Transpose", ["a"], ["t"], perm=[0, 3, 1, 2]))
        conv_in = "t"
    node, more = layer("conv", rng, conv_in, "y", 4, 5)
    init.update(more)
    canon, lines = assert_same_forward(with_output([*nodes, node], shape, init), (2, *shape[1:]))
    assert not {"Sub", "Div"} & set(ops(canon))
    assert sum("into the following" in line for line in lines) == 2


def test_constants_that_are_not_per_channel_or_precede_padding_stay():
    rng = np.random.default_rng(7)
    per_pixel, init = affine_nodes("x", "a", ["Sub", "Div"], [rng.uniform(0.5, 1.5, (4, 7, 7)) for _ in range(2)])
    node, more = layer("conv", rng, "a", "y", 4, 5, pads=[1, 1, 1, 1])
    init.update(more)
    canon, lines = assert_same_forward(with_output([*per_pixel, node], ["N", 4, 7, 7], init), (2, 4, 7, 7))
    assert ops(canon) == ["Sub", "Div", "Conv"]
    assert any(line.startswith("RecordInputNormalization: ") for line in lines), lines
