"""Attention under AttnLRP and CP-LRP against the float64 oracle (tests/oracle/attention.py), with
a dynamic sequence length, multi-query attention, a causal mask built from the input's shape; conservation
of CP-LRP; and which composite a graph with attention gets."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import lrpc
import lrpc.gradient_form
from lrpc.errors import LrpcError
from oracle.attention import Block


def _explain(block, composite, xs, **kw):
    model = lrpc.compile(block.onnx_model(), composite=composite, **kw)
    session = ort.InferenceSession(model.SerializeToString())
    return [session.run(None, {"x": x.astype(np.float32)}) for x in xs]


def _rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("mode, composite", [("attnlrp", "AttnLRP"), ("cplrp", "CPLRP")])
@pytest.mark.parametrize("kv_heads, causal", [(2, True), (1, True), (2, False)])
def test_attention_block_matches_oracle(mode, composite, kv_heads, causal):
    block = Block(kv_heads=kv_heads, causal=causal)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, s, 8)) for s in (5, 9)]  # one file, two sequence lengths
    for x, (logits, rel) in zip(xs, _explain(block, composite, xs)):
        for n in range(len(x)):
            want, want_logits, _ = block.relevance(x[n].astype(np.float32).astype(np.float64), mode, eps=1e-12)
            np.testing.assert_allclose(logits[n], want_logits, rtol=1e-5, atol=1e-6)
            assert _rel_l2(rel[n], want) < 1e-5, (mode, n, _rel_l2(rel[n], want))


def test_cplrp_conserves_without_biases():
    """CP-LRP is LRP-0 through linear maps with the attention weights constant: Σ R = logit as ε → 0."""
    block = Block(kv_heads=1)
    block.bo[:] = block.bc[:] = 0
    x = np.random.default_rng(2).standard_normal((3, 6, 8))
    ((logits, rel),) = _explain(block, "CPLRP:eps=1e-12", [x])
    np.testing.assert_allclose(rel.sum((1, 2)), logits.max(1), rtol=1e-4)


def test_graph_with_attention_defaults_to_attnlrp():
    model = lrpc.compile(Block().onnx_model())
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["lrpc.rule"].startswith("AttnLRP"), meta["lrpc.rule"]


def test_forward_is_unchanged():
    block = Block(kv_heads=1)
    x = np.random.default_rng(4).standard_normal((2, 7, 8)).astype(np.float32)
    plain = ort.InferenceSession(block.onnx_model().SerializeToString()).run(None, {"x": x})[0]
    ((logits, _),) = _explain(block, "AttnLRP", [x])
    np.testing.assert_array_equal(logits, plain)


def test_cplrp_on_a_product_without_attention_weights_is_refused():
    """gate-constant on q·kᵀ has no factor to hold: named, with what to do."""
    with pytest.raises(LrpcError, match=r"'P' \(MatMul\).*neither factor.*softmax.*product=half"):
        lrpc.compile(Block().onnx_model(), composite="AttnLRP", rule_map=["P=gate-constant"])


def test_int_cast_of_the_signal_is_refused():
    block = Block(causal=False)
    model = block.onnx_model()
    g = model.graph
    node = next(n for n in g.node if n.name == "u")
    cast = onnx.helper.make_node("Cast", ["u"], ["u_int"], name="to_int", to=onnx.TensorProto.INT64)
    back = onnx.helper.make_node("Cast", ["u_int"], ["u_back"], name="to_float", to=onnx.TensorProto.FLOAT)
    g.node.insert(list(g.node).index(node) + 1, cast)
    g.node.insert(list(g.node).index(node) + 2, back)
    first = next(n for n in g.node if n.name == "first")
    first.input[0] = "u_back"
    with pytest.raises(LrpcError, match=r"to_float.*Cast from INT64"):
        lrpc.compile(model)


def test_gradient_through_attention_matches_finite_differences():
    """--method gradient through q·kᵀ, the softmax, the mask and A·v (multi-query: broadcast k and v)."""
    block = Block(kv_heads=1)
    x = np.random.default_rng(5).standard_normal((1, 5, 8))
    ((logits, grad),) = _explain(block, None, [x], method="gradient", target=1)
    f = lambda z: block.forward(z)["logits"][1]
    h, numeric = 1e-6, np.zeros_like(x[0])
    for i in np.ndindex(x[0].shape):
        step = np.zeros_like(x[0])
        step[i] = h
        numeric[i] = (f(x[0] + step) - f(x[0] - step)) / (2 * h)
    assert _rel_l2(grad[0], numeric) < 1e-5, _rel_l2(grad[0], numeric)


def test_cplrp_holds_a_gated_units_activated_factor():
    """SwiGLU-style act(x·W_g)·(x·W_u) under CPLRP: the activated factor is held fixed, all relevance goes
    through x·W_u — LRP-0 there, so for bias-free layers relevance is conserved (ε → 0)."""
    rng = np.random.default_rng(7)
    wg, wu, wd = (rng.standard_normal(s).astype(np.float32) for s in ((4, 6), (4, 6), (6, 3)))
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("MatMul", ["x", "wg"], ["g"]),
        helper.make_node("Sigmoid", ["g"], ["sg"]),
        helper.make_node("Mul", ["g", "sg"], ["silu"]),
        helper.make_node("MatMul", ["x", "wu"], ["u"]),
        helper.make_node("Mul", ["silu", "u"], ["gated"], name="gated"),
        helper.make_node("MatMul", ["gated", "wd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "swiglu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(w, n) for w, n in ((wg, "wg"), (wu, "wu"), (wd, "wd"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    explained = lrpc.compile(model, composite="CPLRP:eps=1e-12")
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y, rel = ort.InferenceSession(explained.SerializeToString()).run(None, {"x": x})
    silu = (x @ wg) / (1 + np.exp(-(x @ wg)))
    t = y.argmax(1)
    r_gated = np.zeros_like(y, dtype=np.float64)
    r_gated[np.arange(5), t] = y[np.arange(5), t]
    gated = silu * (x @ wu)
    r_units = np.einsum("nj,jk,nk->nj", gated, wd, r_gated / (gated @ wd))  # LRP-0 at the down projection
    want = np.einsum("ni,ij,nj->ni", x, wu, r_units / (x @ wu))  # all of it through x·W_u
    assert _rel_l2(rel, want) < 1e-5
    np.testing.assert_allclose(rel.sum(1), y[np.arange(5), t], rtol=1e-4)


def test_cplrp_holds_attention_weights_mixed_after_the_softmax():
    """Talking heads (CaiT): the softmax outputs are mixed across heads by a constant matrix before A·v.
    Those are still attention weights: CP-LRP holds them, no relevance reaches q and k, and the map is
    LRP-0 through v alone (conserving for bias-free layers)."""
    block = Block(kv_heads=2, causal=False)
    block.bo[:] = block.bc[:] = 0
    model = block.onnx_model()
    g = model.graph
    mix = np.array([[0.7, 0.3], [0.4, 0.6]], np.float32)  # heads × heads
    soft = next(n for n in g.node if n.op_type == "Softmax")
    soft.output[0] = "A_raw"
    g.initializer.append(onnx.numpy_helper.from_array(mix, "mix"))
    at = list(g.node).index(soft) + 1
    g.node.insert(at, onnx.helper.make_node("Transpose", ["A_raw"], ["A_t"], perm=[0, 2, 3, 1], name="heads_last"))
    g.node.insert(at + 1, onnx.helper.make_node("MatMul", ["A_t", "mix"], ["A_mixed"], name="talking_heads"))
    g.node.insert(at + 2, onnx.helper.make_node("Transpose", ["A_mixed"], ["A"], perm=[0, 3, 1, 2], name="heads_first"))
    x = np.random.default_rng(8).standard_normal((2, 6, 8)).astype(np.float32)
    explained = lrpc.compile(model, composite="CPLRP")
    logits, rel = ort.InferenceSession(explained.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(rel.sum((1, 2)), logits.max(1), rtol=1e-4)
    with pytest.raises(LrpcError, match="neither factor"):  # without the mix q·kᵀ has no weights to hold
        lrpc.compile(model, composite="CPLRP", rule_map=["P=gate-constant", "O=half"])


@pytest.mark.parametrize("causal", [True, False])
def test_softmax_reads_minus_inf_as_lowest_only_where_a_mask_can_reach(causal, monkeypatch):
    """In the relevance form (the gradient form switched off), the Max that reads a masked −inf score as
    the lowest float is kept after the causal Where and left out for scaled q·kᵀ scores (the relevance
    form of test_attention_block_matches_oracle's rules); the gradient form never multiplies by the
    scores and needs none."""
    with monkeypatch.context() as patch:
        patch.setattr(lrpc.gradient_form, "usable", lambda *args: False)
        relevance_form = lrpc.compile(Block(causal=causal).onnx_model(), composite="AttnLRP")
    assert sum(n.op_type == "Max" for n in relevance_form.graph.node) == int(causal)
    gradient_form = lrpc.compile(Block(causal=causal).onnx_model(), composite="AttnLRP")
    assert not any(n.op_type in ("Max", "Div") for n in gradient_form.graph.node)
