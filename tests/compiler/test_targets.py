"""What is explained, against the oracle: any output or inner tensor, and every target mode
(max, fixed index or multi-index, per-call index, all units, per-call mask)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import lrpc
import oracle
from lrpc.errors import LrpcError

RULE = "epsilon"


def conv_net(seed=0):
    """x [2, 6, 6] → conv → relu → conv → relu: the explained tensor is a [3, 4, 4] map."""
    net = oracle.Net((2, 6, 6), seed=seed)
    net.conv(4, [3, 3], pads=[1, 1, 1, 1]).relu().conv(3, [3, 3]).relu()
    return net


def backward(layers, x, r0):
    """The oracle's relevance at the input for a given start relevance r0 at the last layer."""
    acts = oracle.forward(layers, x)
    R = np.asarray(r0, np.float64).reshape(-1)
    for layer, a in zip(reversed(layers), reversed(acts[:-1])):
        R = layer.relevance(a, R, oracle.RULES[RULE])
    return R.reshape(np.shape(x))


def run(proto, feeds):
    sess = oracle.session(proto)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def inputs(n=3, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 2, 6, 6)).astype(np.float32)


def expected(layers, X, start):
    """Oracle relevance per sample; start(y) gives the start relevance from the last activation."""
    return np.stack([backward(layers, x, start(oracle.forward(layers, x)[-1], n)) for n, x in enumerate(X)])


def test_all_units():
    net, X = conv_net(), inputs()
    out = run(lrpc.compile(net.model(), RULE, target="all"), {"x": X})
    oracle.assert_rel_close(out["relevance"], expected(net.layers, X, lambda y, n: y), 1e-5)


def test_mask_chosen_per_call():
    net, X = conv_net(), inputs()
    mask = (np.random.default_rng(2).uniform(size=(3, 3, 4, 4)) > 0.5).astype(np.float32)
    proto = lrpc.compile(net.model(), RULE, target="mask")
    assert [i.name for i in proto.graph.input] == ["x", "mask"]
    out = run(proto, {"x": X, "mask": mask})
    oracle.assert_rel_close(out["relevance"], expected(net.layers, X, lambda y, n: mask[n].reshape(-1) * y), 1e-5)


@pytest.mark.parametrize("target", ["1,2,3", 27])
def test_fixed_unit_of_a_map(target):
    net, X = conv_net(), inputs()
    flat = 1 * 16 + 2 * 4 + 3
    out = run(lrpc.compile(net.model(), RULE, target=target), {"x": X})
    onehot = np.eye(48)[flat]
    oracle.assert_rel_close(out["relevance"], expected(net.layers, X, lambda y, n: onehot * y), 1e-5)
    assert flat == 27


def test_max_and_per_call_unit_of_a_map():
    net, X = conv_net(), inputs()
    chosen = np.array([0, 47, 20], np.int64)
    out = run(lrpc.compile(net.model(), RULE, target="input"), {"x": X, "target": chosen})
    oracle.assert_rel_close(out["relevance"], expected(net.layers, X, lambda y, n: np.eye(48)[chosen[n]] * y), 1e-5)
    out = run(lrpc.compile(net.model(), RULE), {"x": X})
    oracle.assert_rel_close(out["relevance"], expected(net.layers, X, lambda y, n: np.eye(48)[np.argmax(y)] * y), 1e-5)


def test_inner_tensor_by_name_and_index():
    net = oracle.Net((2, 6, 6), seed=3)
    net.conv(4, [3, 3]).relu()
    inner, prefix = net.cur, list(net.layers)
    net.flatten().gemm(5)
    X = inputs()
    proto = lrpc.compile(net.model(), RULE, explain=f"{inner}:2,1,0")
    assert [o.name for o in proto.graph.output] == [net.cur, "relevance"]
    out = run(proto, {"x": X})
    onehot = np.eye(64)[2 * 16 + 1 * 4 + 0]
    oracle.assert_rel_close(out["relevance"], expected(prefix, X, lambda y, n: onehot * y), 1e-5)


def two_output_model():
    """x → conv → relu → flatten ┬→ gemm → "class_logits" [N, 4]
    └→ gemm → "second" [N, 6]"""
    rng = np.random.default_rng(4)
    w = lambda *s: rng.standard_normal(s).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "a"], ["class_logits"]),
        helper.make_node("Gemm", ["f", "b"], ["second"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("x", 1, ["N", 2, 6, 6])],
        [
            helper.make_tensor_value_info("class_logits", 1, ["N", 4]),
            helper.make_tensor_value_info("second", 1, ["N", 6]),
        ],
        [onnx.numpy_helper.from_array(a, n) for n, a in dict(w=w(3, 2, 3, 3), a=w(48, 4), b=w(48, 6)).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), rng


def test_output_chooses_among_several():
    model, _ = two_output_model()
    X = inputs()
    first = run(lrpc.compile(model, RULE, target="all"), {"x": X})["relevance"]
    second = run(lrpc.compile(model, RULE, target="all", output_name="second"), {"x": X})["relevance"]
    conv = oracle.conv_layer(onnx.numpy_helper.to_array(model.graph.initializer[0]), None, (2, 6, 6))
    for out, w in ((first, model.graph.initializer[1]), (second, model.graph.initializer[2])):
        layers = [conv, oracle.Relu(), oracle.Identity(), oracle.matmul_layer(onnx.numpy_helper.to_array(w), None)]
        oracle.assert_rel_close(out, expected(layers, X, lambda y, n: y), 1e-5)
    meta = {p.key: p.value for p in lrpc.compile(model, RULE, output_name="second").metadata_props}
    assert meta["lrpc.explained"] == "second" and meta["lrpc.classes"] == "6"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(output_name="nope"), "no output of that name; its outputs are class_logits, second"),
        (dict(explain="nope"), "no tensor, node or layer of that name"),
        (dict(explain="r:0", target="all"), "fixes the unit already"),
        (dict(explain="r", output_name="second"), "not both"),
        (dict(target=4), r"4 classes \(0–3\)"),
        (dict(explain="r", target="3,0,0"), r"per-sample shape \[3, 4, 4\]"),
        (dict(explain="r", target=48), "48 units per sample"),
        (dict(target="1,2"), "4 classes"),
        (dict(target="seven"), "--target takes"),
    ],
)
def test_what_is_explained_errors(kwargs, message):
    model, _ = two_output_model()
    with pytest.raises(LrpcError, match=message):
        lrpc.compile(model, RULE, **kwargs)


def test_runtime_feeds_the_mask_in_batches():
    from lrpc_runtime import Explainer

    net, X = conv_net(), inputs(5)
    mask = np.random.default_rng(5).uniform(size=(5, 3, 4, 4)).astype(np.float32)
    proto = lrpc.compile(net.model(), RULE, target="mask")
    explainer = Explainer(proto.SerializeToString(), batch_size=2)
    assert explainer.metadata.target_mode == "mask" and explainer.input_names == ["x"]
    result = explainer.explain(X, target=mask)
    np.testing.assert_allclose(result.relevance_map, run(proto, {"x": X, "mask": mask})["relevance"], rtol=1e-6)
    with pytest.raises(ValueError, match="--target mask"):
        explainer.explain(X)
    with pytest.raises(ValueError):
        explainer.explain(X, target=mask[:, :2])
    with pytest.raises(ValueError, match="batch"):
        explainer.explain(X, target=mask[:3])


def test_runtime_reads_multi_index_and_all_modes():
    from lrpc_runtime import Explainer

    net = conv_net()
    assert Explainer(lrpc.compile(net.model(), RULE, target="1,2,3").SerializeToString()).metadata.fixed_target == (
        1,
        2,
        3,
    )
    explainer = Explainer(lrpc.compile(net.model(), RULE, target="all").SerializeToString())
    assert explainer.metadata.target_mode == "all"
    with pytest.raises(ValueError, match="cannot be chosen per call"):
        explainer.explain(inputs(), target=1)
