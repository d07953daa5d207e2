"""The emitted node order (compiler/schedule.py): ASAP levels, so that onnxruntime, which enters a node's
input producers latest-in-file first, computes each quotient's denominator after the relevance."""

from __future__ import annotations

import onnx
from onnx import helper

import lrpc
from lrpc.schedule import order_by_level
from test_rule_maps import vgg_like


def test_nodes_move_to_their_level_and_ties_keep_their_order():
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="forward1"),
            helper.make_node("Relu", ["a"], ["b"], name="forward2"),
            helper.make_node("Neg", ["b"], ["r"], name="backward"),
            helper.make_node("Abs", ["a"], ["d"], name="denominator"),  # needs only a: level 2
            helper.make_node("Div", ["r", "d"], ["s"], name="quotient"),
            helper.make_node("Sigmoid", ["x"], ["c"], name="side"),
        ],  # level 1
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, [2]) for v in ("s", "c")],
    )
    order_by_level(graph)
    assert [n.name for n in graph.node] == ["forward1", "side", "forward2", "denominator", "backward", "quotient"]


def test_each_quotient_finds_its_denominator_earlier_in_the_file_than_its_relevance():
    explained = lrpc.compile(vgg_like().model(), rule="epsilon")
    position = {out: k for k, node in enumerate(explained.graph.node) for out in node.output}
    producer = {out: node for node in explained.graph.node for out in node.output}
    # the top layer's relevance is the seed, a few logit-sized steps from the logits: no tensor waits there;
    # |z| / (|z| + ε) (Builder.divide of a relevance z ⊙ c) divides forward values, no relevance
    quotients = [
        n
        for n in explained.graph.node
        if n.op_type == "Div"
        and n.name.startswith("lrp/")
        and not producer[n.input[0]].name.startswith("lrp/start/")
        and producer[n.input[0]].op_type != "Abs"
    ]
    assert len(quotients) >= 3  # every layer below the top
    for div in quotients:
        numerator, denominator = div.input
        assert position[denominator] < position[numerator], div.name
