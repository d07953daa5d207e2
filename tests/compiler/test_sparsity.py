"""A ReLU's output stands in for its layer's z (or a residual join's sum) when the relevance above
vanishes where it is zero (rules/sparsity.py): the explained graph then reads z only in the ReLU, drops
γ's negative group, and still gives the float64 oracle's relevance; where a consumer lacks the factor
(flat), z is kept."""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import lrpc
import oracle
from nets import make_model, tensor
from oracle.dag import explain
from oracle.onnx_reader import read_model
from test_rule_maps import layer_rules, lrpc_relevance, oracle_relevance, vgg_like

R = oracle.RULES
RULES = {  # lrpc spec → the oracle's rule
    "epsilon": R["epsilon"],
    "epsilon:eps=0": R["zero"],
    "zplus": R["zplus"],
    "alpha2beta1": R["alpha2beta1"],
    "gamma": R["gamma"],
    "gamma:gamma=1": partial(oracle.rule_gamma, gamma=1.0),
}
LINEAR = {"conv1": "conv1", "conv2": "conv3", "gemm1": "gemm7", "gemm2": "gemm9"}  # oracle.Net names nodes so


def consumers(model: onnx.ModelProto) -> dict[str, list[str]]:
    users = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node.op_type)
    return users


def forward_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """Each model layer's output name (nodes of the source graph keep their names)."""
    names = {n.name: n.output[0] for n in model.graph.node}
    return {layer: names[node] for layer, node in LINEAR.items()}


def negative_gates(model: onnx.ModelProto) -> int:
    """How many quotients divide by min(z_g, 0) − ε: the negative groups lrpc builds (rules/linear.py)."""
    producer = {out: n for n in model.graph.node for out in n.output}
    count = 0
    for node in model.graph.node:
        stab = producer.get(node.input[1]) if node.op_type == "Div" else None
        clipped = producer.get(stab.input[0]) if stab is not None and stab.op_type == "Add" else None
        count += clipped is not None and clipped.op_type == "Min"
    return count


def inputs():
    return np.random.default_rng(3).uniform(-1.5, 2.0, (4, 2, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("rule", RULES)
def test_relu_output_stands_in_for_z_and_matches_the_oracle(rule):
    net = vgg_like()
    explained = lrpc.compile(net.model(), rule=rule)
    users, outs = consumers(explained), forward_outputs(explained)
    for layer in ("conv1", "conv2", "gemm1"):  # each followed by a ReLU; gemm2 (the logits) is not
        assert users[outs[layer]] == ["Relu"], (layer, users[outs[layer]])
    if rule.startswith("gamma"):  # only gemm2 (no ReLU after it) keeps the negative group's gate
        assert negative_gates(explained) == 1
    got = lrpc_relevance(net.model(), inputs(), rule=rule)
    expected = oracle_relevance(net, inputs(), layer_rules(net, *[RULES[rule]] * 4))
    oracle.assert_rel_close(got, expected, 1e-5)


def test_a_consumer_without_the_factor_keeps_z():
    """conv2 under the flat rule hands relevance to zeros of relu(conv1): conv1's rule must read z."""
    net = vgg_like()
    rule_map = ["conv3=flat"]
    explained = lrpc.compile(net.model(), rule="gamma", rule_map=rule_map)
    users, outs = consumers(explained), forward_outputs(explained)
    assert len(users[outs["conv1"]]) > 1 and negative_gates(explained) == 2
    assert users[outs["gemm1"]] == ["Relu"]  # gemm2 (γ) carries the factor
    got = lrpc_relevance(net.model(), inputs(), rule="gamma", rule_map=rule_map)
    expected = oracle_relevance(net, inputs(), layer_rules(net, R["gamma"], R["flat"], R["gamma"], R["gamma"]))
    oracle.assert_rel_close(got, expected, 1e-5)


def residual_block() -> onnx.ModelProto:
    """x → conv a → relu → conv b (+ x) → relu → flatten → gemm: a residual join followed by a ReLU."""
    rng = np.random.default_rng(4)
    w = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)
    init = {
        "wa": w(3, 3, 3, 3),
        "ba": rng.normal(0, 0.1, 3).astype(np.float32),
        "wb": w(3, 3, 3, 3),
        "bb": rng.normal(0, 0.1, 3).astype(np.float32),
        "wf": w(3 * 5 * 5, 4).T.copy(),
        "bf": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["za"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["za"], ["a"], name="relu_a"),
        helper.make_node("Conv", ["a", "wb", "bb"], ["zb"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["zb", "x"], ["join"], name="join"),
        helper.make_node("Relu", ["join"], ["out"], name="relu_out"),
        helper.make_node("Flatten", ["out"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    return make_model(nodes, [tensor("x", ["N", 3, 5, 5])], [tensor("logits", ["N", 4])], init)


@pytest.mark.parametrize("rule", ["epsilon", "gamma"])
def test_a_residual_join_reads_its_relu_output_and_matches_the_dag_oracle(rule):
    model = residual_block()
    explained = lrpc.compile(model, rule=rule)
    users = consumers(explained)
    assert users["join"] == ["Relu"] and users["za"] == ["Relu"], (users["join"], users["za"])
    # conv_b's and the logits' relevance arrives as z ⊙ c: γ's groups take c ⊙ max(z, 0) and c ⊙ min(z, 0),
    # no [z > 0] / [z < 0] mask (rules/linear.py)
    assert not {"Greater", "Less"} & {n.op_type for n in explained.graph.node}
    x = np.random.default_rng(5).uniform(-1, 1, (3, 3, 5, 5)).astype(np.float32)
    session = oracle.session(explained)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))["relevance"]
    _, expected = explain(read_model(model), x, rule, "logits")
    oracle.assert_rel_close(got, expected, 1e-5)


@pytest.mark.parametrize("rule, sign_tests", [("zplus", 0), ("alpha2beta1", 4), ("epsilon", 0)])
def test_stabilizers_of_non_negative_denominators_have_no_sign_test(rule, sign_tests):
    """z⁺ = W⁺x⁺ + W⁻x⁻ + b⁺ ≥ 0 and a ReLU stand-in ≥ 0 get stab = z + ε; α-β's β part (≤ 0) keeps the
    sign test, a Clip each (Builder.sign_shift); the logits' ε (any sign) needs none either, as their
    relevance y ⊙ w arrives as a product with y (Builder.divide: w ⊙ |y| / (|y| + ε))."""
    explained = lrpc.compile(vgg_like().model(), rule=rule)
    assert sum(n.op_type == "Clip" for n in explained.graph.node) == sign_tests


def clipped_block(low: float = 0.0) -> onnx.ModelProto:
    """x → conv a → Clip(low, 6) → depthwise conv b → Clip(low, 6) → conv c (+ x) → Clip(low, 6) → gemm:
    MobileNetV2's ReLU6 layers and a residual join followed by a Clip. Weights large enough that some
    activations pass 6 (where Clip's output is not z)."""
    rng = np.random.default_rng(6)
    w = lambda *s: (rng.standard_normal(s) * 3.0 / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    init = {
        "wa": w(6, 3, 1, 1),
        "ba": rng.normal(0, 0.5, 6).astype(np.float32),
        "wb": w(6, 1, 3, 3),
        "wc": w(3, 6, 1, 1),
        "wf": w(4, 3 * 5 * 5),
        "bf": rng.normal(0, 0.1, 4).astype(np.float32),
        "low": np.array(low, np.float32),
        "high": np.array(6.0, np.float32),
    }
    clip = lambda i, o: helper.make_node("Clip", [i, "low", "high"], [o], name="clip_" + o)
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["za"], name="conv_a"),
        clip("za", "a"),
        helper.make_node("Conv", ["a", "wb"], ["zb"], name="conv_b", group=6, pads=[1, 1, 1, 1]),
        clip("zb", "b"),
        helper.make_node("Conv", ["b", "wc"], ["zc"], name="conv_c"),
        helper.make_node("Add", ["zc", "x"], ["join"], name="join"),
        clip("join", "out"),
        helper.make_node("Flatten", ["out"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    return make_model(nodes, [tensor("x", ["N", 3, 5, 5])], [tensor("logits", ["N", 4])], init)


def sign_tests(model: onnx.ModelProto) -> int:
    """The ε stabiliser's sign tests: a Clip each (Builder.sign_shift); the model's own Clips are not lrp's."""
    return sum(n.op_type == "Clip" and n.name.startswith("lrp/") for n in model.graph.node)


@pytest.mark.parametrize("rule", ["epsilon", "gamma", "alpha2beta1"])
def test_a_clip_at_zero_reads_relu_of_z_and_matches_the_dag_oracle(rule):
    """ReLU6 = Clip(z, 0, 6) is zero exactly where z ≤ 0: each layer below one reads Relu(z) for z (no
    sign test); a Clip at −1 keeps z and its sign test. Relevance matches the float64 DAG oracle, with
    activations above 6 in every clipped layer."""
    x = np.random.default_rng(7).uniform(-1, 2, (3, 3, 5, 5)).astype(np.float32)
    for low, relu_reads in ((0.0, {"za", "zb", "join"}), (-1.0, set())):
        model = clipped_block(low)
        explained = lrpc.compile(model, rule=rule)
        users = consumers(explained)
        for z in ("za", "zb", "join"):
            if z in relu_reads:  # besides its Clip, only Relu(z) reads z — where the rule reads z at all (ε)
                assert set(users[z]) <= {"Clip", "Relu"} and ("Relu" in users[z] or rule != "epsilon"), users[z]
            else:
                assert "Relu" not in users[z], (low, z, users[z])
        if rule == "epsilon":  # under the Clip at 0 none is left: conv_c's z and the logits get their relevance
            # as products z ⊙ c (Builder.divide); at −1 the Clip outputs, not the zs, multiply the relevance
            assert sign_tests(explained) == (0 if low == 0.0 else 3), (low, sign_tests(explained))
        read = {name for n in explained.graph.node for name in n.input} | {o.name for o in explained.graph.output}
        assert all(set(n.output) & read for n in explained.graph.node)  # an unread Relu(z) is dropped (Builder)
        session = oracle.session(explained)
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))
        forward = oracle.session(model).run(None, {"x": x})[0]
        _, expected = explain(read_model(model), x, rule, "logits")
        oracle.assert_rel_close(outputs["relevance"], expected, 1e-5)
        np.testing.assert_array_equal(outputs["logits"], forward)
    hidden = ReferenceEvaluator(clipped_block(0.0)).run(["za", "zb", "join"], {"x": x})
    assert all((h > 6).any() and (h < 0).any() for h in hidden)  # both bounds of each Clip are reached
