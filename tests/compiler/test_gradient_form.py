"""The gradient form of the LRP-0 rules (lrpc/gradient_form.py): the relevance of the relevance form on the
same graph (which the float64 oracles check: test_rules_gates_norms.py, test_attention_rules.py), with
fewer nodes; when each form is taken; and units whose pre-activation is exactly 0.

The relevance form is built by switching the gradient form off (`lrpc.gradient_form.usable`)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

import lrpc
import lrpc.gradient_form
from nets import make_model, small_cnn, tensor
from oracle.attention import Block
from test_rules_gates_norms import CASES


def _forms(model, monkeypatch, **options):
    gradient = lrpc.compile(model, **options)
    with monkeypatch.context() as patch:
        patch.setattr(lrpc.gradient_form, "usable", lambda *args: False)
        relevance = lrpc.compile(model, **options)
    return gradient, relevance


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})


def _divisions(model) -> int:
    return sum(n.op_type == "Div" for n in model.graph.node)


def _assert_same_relevance(gradient, relevance, x, tol=1e-5):
    (y_g, r_g), (y_r, r_r) = _run(gradient, x), _run(relevance, x)
    np.testing.assert_allclose(y_g, y_r, rtol=1e-6, atol=1e-6)  # one graph each: onnxruntime fuses them apart
    n = len(x)
    err = np.linalg.norm((r_g - r_r).reshape(n, -1), axis=1) / np.linalg.norm(r_r.reshape(n, -1), axis=1)
    assert np.all(err <= tol), err


GRAPHS = [
    *("silu", "gelu", "gelu_tanh", "quickgelu", "mish", "hardswish", "gelu_op", "hardswish_op", "swish_op"),
    *("mish_op", "softsign_op", "celu_op", "prelu_op"),
    *("layernorm", "layernorm_decomposed", "instancenorm", "groupnorm", "rmsnorm"),
    *("se_gate-constant", "se_half", "ghost_half"),
]


@pytest.mark.parametrize("name", GRAPHS)
def test_equals_the_relevance_form(name, monkeypatch):
    """Activations held as identity, the norms with σ held fixed, gates held or halved, under the lxt
    convention's LRP-0 (ε = 1e-12): the same relevance, and no stabilised quotient per layer."""
    net, out = CASES.net(name)
    product = name.split("_", 1)[1] if name.startswith(("se_", "ghost_")) else None
    options = dict(rule="epsilon", convention="lxt", rule_map=[f"product={product}"] if product else None)
    gradient, relevance = _forms(net.model(out), monkeypatch, **options)
    assert _divisions(gradient) < _divisions(relevance)
    _assert_same_relevance(gradient, relevance, CASES.inputs(name, "epsilon", 3))


@pytest.mark.parametrize("composite", ["AttnLRP", "CPLRP"])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_equals_the_relevance_form(composite, causal, monkeypatch):
    gradient, relevance = _forms(Block(kv_heads=1, causal=causal).onnx_model(), monkeypatch, composite=composite)
    assert len(gradient.graph.node) < len(relevance.graph.node)
    x = np.random.default_rng(3).standard_normal((3, 6, 8))
    _assert_same_relevance(gradient, relevance, x)


@pytest.mark.parametrize("target", ["all", "2", "max"])
def test_targets_seed_the_gradient_form(target, monkeypatch):
    """Every unit (g₀ = 1), a fixed unit and each sample's largest: the seed is the selection itself."""
    options = dict(composite="CPLRP", target=target)
    gradient, relevance = _forms(Block(kv_heads=1, causal=False).onnx_model(), monkeypatch, **options)
    assert len(gradient.graph.node) < len(relevance.graph.node)
    _assert_same_relevance(gradient, relevance, np.random.default_rng(7).standard_normal((3, 5, 8)))


def test_zennits_start_relevance_1(monkeypatch):
    """R₀ = w: g₀ = w / stab(y), the relevance form's first quotient."""
    gradient, relevance = _forms(Block(kv_heads=1).onnx_model(), monkeypatch, composite="AttnLRP", convention="zennit")
    assert len(gradient.graph.node) < len(relevance.graph.node)
    _assert_same_relevance(gradient, relevance, np.random.default_rng(6).standard_normal((3, 6, 8)))


def test_relu_cnn_with_max_pool_under_the_lxt_convention(monkeypatch):
    gradient, relevance = _forms(small_cnn(softmax=False), monkeypatch, rule="epsilon", convention="lxt")
    assert _divisions(gradient) == 0 < _divisions(relevance)
    _assert_same_relevance(gradient, relevance, np.random.default_rng(4).standard_normal((4, 2, 8, 8)))


@pytest.mark.parametrize(
    "options",
    [
        dict(composite="AttnLRP", rule_map=["dense=epsilon:eps=0.01"]),  # ε not negligible
        dict(composite="AttnLRP", rule_map=["first=zplus"]),  # not LRP-0
        dict(rule="epsilon"),  # lrpc's convention: a constant addend gets no relevance
    ],
)
def test_relevance_form_where_a_rule_has_no_gradient_form(options, monkeypatch):
    gradient, relevance = _forms(Block(kv_heads=1).onnx_model(), monkeypatch, **options)
    assert len(gradient.graph.node) == len(relevance.graph.node) and _divisions(gradient) > 0
    _assert_same_relevance(gradient, relevance, np.random.default_rng(5).standard_normal((2, 5, 8)), tol=0)


def test_inspect_names_the_form(tmp_path, capsys):
    from lrpc.cli import main

    path = tmp_path / "block.onnx"
    path.write_bytes(Block(kv_heads=1).onnx_model().SerializeToString())
    assert main(["inspect", str(path)]) == 0
    assert "lowering: gradient form" in capsys.readouterr().out
    assert main(["inspect", str(path), "--rule", "epsilon"]) == 0  # lrpc's convention: constants get none
    assert "lowering:" not in capsys.readouterr().out


def _gelu_mlp():
    """x [n, 2] → Gemm (no bias) → Gelu → Gemm: unit 1's pre-activation x·(1, −1) is exactly 0 at x₀ = x₁."""
    w1 = np.array([[1.0, 1.0, 0.5], [0.5, -1.0, 2.0]], np.float32)
    w2 = np.array([[1.0, -2.0], [3.0, 0.5], [-1.0, 1.0]], np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["z"], name="fc1"),
        helper.make_node("Gelu", ["z"], ["a"], name="gelu"),
        helper.make_node("Gemm", ["a", "w2"], ["logits"], name="fc2"),
    ]
    return make_model(nodes, [tensor("x", ["batch", 2])], [tensor("logits", ["batch", 2])], {"w1": w1, "w2": w2}, 20)


def test_a_zero_pre_activation_passes_nothing_through_its_activation(monkeypatch):
    """Gelu(0)/stab(0) = 0: the unit gives no relevance below, as in the relevance form; no NaN, and with no
    bias Σ R = the logit."""
    gradient, relevance = _forms(_gelu_mlp(), monkeypatch, composite="AttnLRP")
    assert _divisions(gradient) < _divisions(relevance)
    x = np.array([[0.7, 0.7], [1.5, -0.25]], np.float32)
    (logits, r_g), (_, r_r) = _run(gradient, x), _run(relevance, x)
    assert np.isfinite(r_g).all()
    np.testing.assert_allclose(r_g, r_r, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(r_g.sum(1), logits.max(1), rtol=1e-6)
