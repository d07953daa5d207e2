"""Resize (nearest, linear, cubic; by scales or by sizes with opset 18 axes; 2-D and 3-D) and the
reductions GlobalMaxPool, ReduceMax, ReduceSum, against the float64 graph oracle.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import lrpc
import oracle
from oracle import graphnet
from oracle.graphnet import Cases

RULES = [r for r in oracle.RULES if r != "alpha1beta0"]


def _head(g, *parts):
    return g.gemm(g.concat([g.flatten(p) for p in parts], 1) if len(parts) > 1 else g.flatten(parts[0]), 5)


def _nearest(g):
    a = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))  # (3, 4, 5)
    u = g.resize(a, "nearest", "half_pixel", scales=[1, 2, 2])
    v = g.resize(a, "nearest", "asymmetric", scales=[1, 2, 3], nearest_mode="floor")
    w = g.resize(a, "nearest", "half_pixel", scales=[1, 0.5, 0.6], nearest_mode="round_prefer_ceil")
    return _head(g, g.relu(g.conv(u, 2, (3, 3), strides=[2, 2])), v, w)


def _linear(g):
    a = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))
    u = g.resize(a, "linear", "half_pixel", scales=[1, 2, 2])
    v = g.resize(a, "linear", "align_corners", scales=[1, 1.5, 2])
    w = g.resize(a, "linear", "pytorch_half_pixel", scales=[1, 2, 3])
    d = g.resize(a, "linear", "asymmetric", scales=[1, 0.5, 0.8])
    return _head(g, g.relu(g.conv(u, 2, (3, 3), strides=[2, 2])), v, w, d)


def _cubic(g):
    """Cubic weights can be negative: the same z-rule, now on a map with mixed-sign weights."""
    a = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))
    u = g.resize(a, "cubic", "half_pixel", scales=[1, 2, 2])
    v = g.resize(a, "cubic", "asymmetric", scales=[1, 1.5, 2], cubic_a=-0.5)
    return _head(g, g.relu(g.conv(u, 2, (3, 3), strides=[2, 2])), v)


def _sizes(g):
    """Resize to sizes (opset 18, axes attribute): upsampling 4×5 → 7×8 and downsampling to 3×3."""
    a = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))
    return _head(g, g.resize(a, "linear", "half_pixel", sizes=[3, 7, 8]), g.resize(a, "nearest", sizes=[3, 3, 3]))


def _resize_3d(g):
    """A 3-D volume resized along depth (transposed into place) and width."""
    a = g.relu(g.conv("x", 2, (3, 3, 3), pads=[1, 1, 1, 1, 1, 1]))  # (2, 3, 4, 3)
    u = g.resize(a, "linear", "half_pixel", scales=[1, 2, 1, 2])
    return _head(g, g.relu(g.conv(u, 2, (3, 3, 3), strides=[2, 2, 2])), g.resize(a, "nearest", scales=[1, 2, 2, 1]))


def _reductions(g):
    a = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))  # (4, 4, 5)
    m = g.reduce("GlobalMaxPool", a, [1, 2])
    k = g.reduce("ReduceMax", g.conv("x", 3, (3, 3)), [0, 2], keepdims=0)  # mixed signs, (2,)
    s = g.reduce("ReduceSum", a, [1, 2], keepdims=0)
    c = g.reduce("ReduceSum", g.relu(g.conv(g.combine("Add", a, m), 4, (1, 1))), [0], keepdims=1)
    t = g.reduce("ReduceMax", g.relu(g.conv(a, 2, (1, 1))), [0], keepdims=1)  # ties: both channels 0
    return _head(g, m, k, s, g.relu(g.conv(c, 2, (3, 3))), t)


CASES = Cases(
    {
        "nearest": ((2, 4, 5), _nearest),
        "linear": ((2, 4, 5), _linear),
        "cubic": ((2, 4, 5), _cubic),
        "sizes": ((2, 4, 5), _sizes, 18),
        "resize_3d": ((2, 3, 4, 3), _resize_3d),
        "reductions": ((2, 4, 5), _reductions),
    }
)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("net", CASES.builders)
def test_matches_oracle(net, rule):
    CASES.check(net, rule)


@pytest.mark.parametrize("net", CASES.builders)
def test_batch_equals_single_samples(net):
    CASES.check_batch(net, "epsilon")


@pytest.mark.parametrize("net", CASES.builders)
def test_bias_free_net_conserves_under_zero(net):
    """Interpolation (R_x = x ⊙ Aᵀ(R/Ax)), routing, sums and maxima all keep relevance."""
    R, R_oracle, y = CASES.check(net, "zero", batch=4, bias=False)
    np.testing.assert_allclose(R.reshape(4, -1).astype(np.float64).sum(axis=1), y.max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(R_oracle.reshape(4, -1).sum(axis=1), y.max(axis=1), rtol=1e-9)


def test_reduce_max_ties_occur_and_go_to_the_first_maximum():
    """Two ReLU channels that are both 0 tie; flat sends relevance to such units, so the convention
    (first maximum, as MaxPool) is compared by test_matches_oracle[reductions-flat]. Check ties occur."""
    net, _ = CASES.net("reductions")
    X = CASES.inputs("reductions", "flat", 3)
    op = next(op for op in net.ops if op.output.startswith("reducemax") and net.shapes[op.output][0] == 1)
    ties = 0
    for x in X:
        values = {"x": x.astype(np.float64)}
        for o in net.ops[: net.ops.index(op) + 1]:
            values[o.output] = o.forward([values[n] for n in o.inputs])
        t = values[op.inputs[0]]
        ties += int(np.sum(t[0] == t[1]))
    assert ties > 0


def test_emitted_file_passes_the_checker():
    onnx.checker.check_model(CASES.compiled("sizes", "epsilon"), full_check=True)


def test_oracle_resize_matrices_are_interpolations():
    """Rows of nearest/linear matrices sum to 1 with weights ≥ 0; cubic rows sum to 1 too."""
    for mode, coord in [
        ("nearest", "asymmetric"),
        ("linear", "half_pixel"),
        ("linear", "align_corners"),
        ("cubic", "half_pixel"),
    ]:
        A = oracle.layers.resize_matrix(5, 8, 1.6, mode, coord)
        np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-12)
        assert mode == "cubic" or A.min() >= 0
    assert (
        oracle.layers.resize_matrix(4, 8, 2.0, "nearest", "asymmetric", "floor").argmax(axis=1) == np.arange(8) // 2
    ).all()


def test_crop_and_resize_is_reported():
    g = graphnet.GraphNet((2, 4, 4))
    a = g.relu(g.conv("x", 2, (3, 3), pads=[1, 1, 1, 1]))
    roi = g.const(np.array([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9], np.float32))
    y = g.node(
        "Resize",
        [a, roi, g.const(np.array([1, 1, 2, 2], np.float32))],
        mode="linear",
        coordinate_transformation_mode="tf_crop_and_resize",
    )
    g.shapes[y] = (2, 8, 8)
    with pytest.raises(lrpc.LrpcError, match="tf_crop_and_resize"):
        lrpc.compile(g.model(g.gemm(g.flatten(y), 3)))


def _resize_net(batch, computed_sizes: bool):
    """Conv → Relu → Resize (linear) to 7×8 → Gemm, the sizes either the constant [batch, 3, 7, 8] or
    computed as timm's ghostnetv2 exports them under a dynamic batch: Concat(Shape(a)[:2], [7, 8])."""
    rng = np.random.default_rng(0)
    init = {
        "w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "fc": rng.standard_normal((5, 3 * 7 * 8)).astype(np.float32),
        "hw": np.array([7, 8], np.int64),
        "start": np.array([0], np.int64),
        "end": np.array([2], np.int64),
        "sizes": np.array([batch, 3, 7, 8], np.int64),
    }
    shape_chain = (
        [
            helper.make_node("Shape", ["a"], ["shape"]),
            helper.make_node("Slice", ["shape", "start", "end"], ["nc"]),
            helper.make_node("Concat", ["nc", "hw"], ["computed"], axis=0),
        ]
        if computed_sizes
        else []
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["a"]),
        *shape_chain,
        helper.make_node("Resize", ["a", "", "", "computed" if computed_sizes else "sizes"], ["u"], mode="linear"),
        helper.make_node("Flatten", ["u"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    dim = "batch" if computed_sizes else batch
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [dim, 2, 4, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [dim, 5])],
        [numpy_helper.from_array(v, k) for k, v in init.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("options", [{"rule": "epsilon"}, {"method": "gradient"}])
def test_sizes_computed_from_the_inputs_shape_equal_constant_sizes(options):
    x = np.random.default_rng(1).random((2, 2, 4, 5), dtype=np.float32)
    run = lambda proto: ort.InferenceSession(proto.SerializeToString()).run(["relevance"], {"x": x})[0]
    computed = lrpc.compile(_resize_net(2, True), **options)
    np.testing.assert_allclose(run(computed), run(lrpc.compile(_resize_net(2, False), **options)), rtol=1e-6, atol=1e-7)
    assert lrpc.verify(computed, samples=3).passed  # the dynamic batch, at batch 3, in float64 too


def test_sizes_computed_from_values_are_refused():
    model = _resize_net(2, True)
    del model.graph.node[2:5]  # the sizes now come from the caller, not from a shape
    model.graph.input.append(helper.make_tensor_value_info("computed", onnx.TensorProto.INT64, [4]))
    with pytest.raises(lrpc.LrpcError, match="sizes are computed at run time"):
        lrpc.compile(model, rule="epsilon")
