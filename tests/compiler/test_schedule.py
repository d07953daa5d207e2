"""The emitted node order (compiler/schedule.py): ASAP levels, so that onnxruntime, which enters a node's
input producers latest-in-file first, computes each quotient's denominator after the relevance."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import lrpc
from lrpc.schedule import live_bytes, onnxruntime_order, order_by_level, runs_best_in_file_order
from nets import make_model, tensor
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


def _branches(big_first: bool) -> onnx.ModelProto:
    """out = Neg(x) ⊙ ReduceSum(Abs(x)): B = Neg(x) and C = Abs(x) are as large as x, s = ReduceSum(C) is one
    number per sample. With C, s before B in the file, the file's order holds two of them at once; onnxruntime's
    walk enters the later operand B first and holds B while it computes C: three."""
    b = helper.make_node("Neg", ["x"], ["B"], name="neg")
    c = helper.make_node("Abs", ["x"], ["C"], name="abs")
    s = helper.make_node("ReduceSum", ["C", "axes"], ["s"], name="sum", keepdims=1)
    out = helper.make_node("Mul", ["B", "s"], ["out"], name="mul")
    nodes = [b, c, s, out] if big_first else [c, s, b, out]
    axes = np.array([1], np.int64)
    return make_model(nodes, [tensor("x", ["N", 1000])], [tensor("out", ["N", 1000])], {"axes": axes}, 17)


def _onnxruntime_ran(model: onnx.ModelProto, folder, order=ort.ExecutionOrder.DEFAULT) -> list[str]:
    """The node names in the order onnxruntime ran them (its profiler)."""
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(folder / "profile")
    options.execution_order = order
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.ones((2, 1000), np.float32)})
    events = json.loads(open(session.end_profiling()).read())
    ran = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    return [e["name"].removesuffix("_kernel_time") for e in sorted(ran, key=lambda e: e["ts"])]


@pytest.mark.parametrize("big_first", [True, False])
def test_the_walk_is_onnxruntimes_and_the_file_order_is_kept_where_it_holds_less(big_first, tmp_path):
    model = _branches(big_first)
    names = [n.name for n in model.graph.node]
    assert [names[k] for k in onnxruntime_order(model.graph)] == _onnxruntime_ran(model, tmp_path)
    in_file = [names[k] for k in range(4)]
    assert _onnxruntime_ran(model, tmp_path, ort.ExecutionOrder.PRIORITY_BASED) == in_file
    sizes = {"x": 8000, "B": 8000, "C": 8000, "s": 8, "out": 8000}
    assert live_bytes(model.graph, list(range(4)), sizes) == (24000 if big_first else 16008)
    assert live_bytes(model.graph, onnxruntime_order(model.graph), sizes) == (16008 if big_first else 24000)
    assert runs_best_in_file_order(model) is not big_first


def test_the_explainer_and_bench_run_a_file_in_its_order_where_it_says_so(tmp_path):
    """A GroupNorm net under AttnLRP keeps less alive in the file's order; a ReLU CNN under ε does not."""
    from lrpc.bench import _session
    from lrpc_runtime import Explainer
    from test_rules_gates_norms import CASES

    net, out = CASES.net("groupnorm")
    for model, expected in (
        (lrpc.compile(net.model(out), composite="AttnLRP"), "file"),
        (lrpc.compile(vgg_like().model(), rule="epsilon"), None),
    ):
        assert {p.key: p.value for p in model.metadata_props}.get("lrpc.execution_order") == expected
        path = tmp_path / "explained.onnx"
        path.write_bytes(model.SerializeToString())
        order = ort.ExecutionOrder.PRIORITY_BASED if expected else ort.ExecutionOrder.DEFAULT
        assert Explainer(path)._session.get_session_options().execution_order == order
        assert _session(str(path), 1).get_session_options().execution_order == order
        given = ort.SessionOptions()  # a caller's own options are left as they are
        assert (
            Explainer(path, session_options=given)._session.get_session_options().execution_order
            == ort.ExecutionOrder.DEFAULT
        )
