"""Self-gated activations, squeeze-excitation gates and norms against the float64 oracle
(tests/oracle/modern.py), conservation, the unchanged forward pass, and what is refused."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import lrpc
import oracle
from oracle import graphnet
from oracle import modern
from lrpc.errors import LrpcError
from oracle.graphnet import Cases

RULES = ["epsilon", "zero", "zplus", "alpha2beta1"]


def _act_net(name):
    def build(g):
        if name in SHIFTED:  # f(0) ≠ 0: after a linear layer, R/z with z → 0 would blow up (as LRP does)
            return g.gemm(g.flatten(g.relu(g.conv(modern.activation(g, name, "x"), 4, (3, 3), strides=[2, 2]))), 5)
        h = modern.activation(g, name, g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
        h = modern.activation(g, name, g.conv(h, 4, (3, 3), strides=[2, 2]))
        return g.gemm(g.flatten(h), 5)

    opset = 20 if name.startswith("gelu") and name.endswith("_op") else 18 if name == "mish_op" else 17
    opset = 24 if name == "swish_op" else opset
    return (2, 7, 7), build, opset


def _se_net(rule, upsampled=False):
    def build(g):
        h = modern.activation(g, "silu", g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
        h = modern.gate(g, g.conv(h, 4, (3, 3), pads=[1, 1, 1, 1]), rule, upsampled=upsampled)
        return g.gemm(g.flatten(g.relu(g.conv(h, 3, (3, 3), strides=[2, 2]))), 5)

    return (2, 6, 6), build


def _norm_net(kind, decomposed=False):
    def build(g):
        h = g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1])
        h = modern.norm(g, h, kind, decomposed=decomposed) if kind != "rms" else modern.rms_norm(g, h)
        h = modern.activation(g, "gelu", h)
        return g.gemm(g.flatten(g.conv(h, 3, (3, 3), strides=[2, 2])), 5)

    return (2, 6, 6), build, 21 if kind == "group" else 17


ACTIVATIONS = sorted(modern.ACTIVATIONS)
SHIFTED = {"hardsigmoid_op"}  # activations with f(0) ≠ 0 read the model input
NORMS = {
    "layernorm": _norm_net("layer"),
    "layernorm_decomposed": _norm_net("layer", True),
    "instancenorm": _norm_net("instance"),
    "groupnorm": _norm_net("group"),
    "rmsnorm": _norm_net("rms"),
}
CASES = Cases(
    {
        **{name: _act_net(name) for name in ACTIVATIONS},
        **NORMS,
        "se_gate-constant": _se_net("gate-constant"),
        "se_half": _se_net("half"),
        "ghost_gate-constant": _se_net("gate-constant", True),
        "ghost_half": _se_net("half", True),
    }
)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("rule", RULES[:2])
def test_self_gated_activation_matches_oracle(name, rule):
    CASES.check(name, rule)


@pytest.mark.parametrize("name", list(NORMS))
@pytest.mark.parametrize("rule", ["epsilon", "zplus"])
def test_norm_matches_oracle(name, rule):
    CASES.check(name, rule)


def _compiled_se(product_rule, rule, bias=True):
    net, out = CASES.net(f"se_{product_rule}", bias)
    return net, out, lrpc.compile(net.model(out), rule=rule, rule_map=[f"product={product_rule}"])


@pytest.mark.parametrize("product_rule", ["gate-constant", "half"])
@pytest.mark.parametrize("rule", RULES)
def test_squeeze_excitation_gate_matches_oracle(product_rule, rule):
    net, out, compiled = _compiled_se(product_rule, rule)
    graphnet.check(net, out, CASES.inputs(f"se_{product_rule}", rule, 3), rule, compiled)


@pytest.mark.parametrize("product_rule", ["gate-constant", "half"])
@pytest.mark.parametrize("rule", ["epsilon", "zplus"])
def test_a_gate_upsampled_by_resize_is_a_gate(product_rule, rule):
    """ghostnetv2: x ⊙ Resize(σ(·)); gate-constant holds the resized gate fixed, as any other gate."""
    net, out = CASES.net(f"ghost_{product_rule}")
    compiled = lrpc.compile(net.model(out), rule=rule, rule_map=[f"product={product_rule}"])
    graphnet.check(net, out, CASES.inputs(f"ghost_{product_rule}", rule, 3), rule, compiled)


@pytest.mark.parametrize("product_rule", ["gate-constant", "half"])
def test_gate_rules_conserve(product_rule):
    """Bias-free, LRP-0: the input relevance adds up to the explained logit, under either gate rule."""
    net, out, compiled = _compiled_se(product_rule, "zero", bias=False)
    X = np.random.default_rng(5).standard_normal((4, *net.input_shape)).astype(np.float32)
    y, R = ort.InferenceSession(compiled.SerializeToString()).run(None, {"x": X})
    logit = y.max(axis=1)
    np.testing.assert_allclose(R.reshape(4, -1).sum(axis=1), logit, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["silu", "gelu", "gelu_tanh", "mish", "hardswish"])
def test_identity_rule_conserves(name):
    net, out = CASES.net(name, bias=False)
    compiled = lrpc.compile(net.model(out), rule="zero")
    X = np.random.default_rng(2).standard_normal((3, *net.input_shape)).astype(np.float32)
    y, R = ort.InferenceSession(compiled.SerializeToString()).run(None, {"x": X})
    np.testing.assert_allclose(R.reshape(3, -1).sum(axis=1), y.max(axis=1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["silu", "gelu", "gelu_tanh", "layernorm_decomposed", "rmsnorm", "se_half"])
def test_recognition_changes_no_node(name):
    """Recognising a pattern only marks nodes: the model serializes to the same bytes after the pass, and
    the explained file's forward output equals the model's (to the rounding of the folding passes, which
    fold e.g. GELU's final ·½ into the next conv)."""
    import onnx_ir as ir
    from lrpc.passes.recognize_products import RecognizeProductsPass

    net, out = CASES.net(name)
    model = net.model(out)
    m = ir.serde.deserialize_model(model)
    before = ir.serde.serialize_model(m).SerializeToString()
    assert RecognizeProductsPass().call(m).modified is False
    assert ir.serde.serialize_model(m).SerializeToString() == before
    X = np.random.default_rng(1).standard_normal((2, *net.input_shape)).astype(np.float32)
    plain = ort.InferenceSession(model.SerializeToString()).run(None, {"x": X})[0]
    explained = ort.InferenceSession(lrpc.compile(model, rule="epsilon").SerializeToString()).run(None, {"x": X})[0]
    np.testing.assert_allclose(explained, plain, rtol=1e-6, atol=1e-6)


def test_default_product_rule_is_gate_constant_for_a_sigmoid_gate():
    net, out = CASES.net("se_gate-constant")
    default = lrpc.compile(net.model(out), rule="epsilon")
    pinned = lrpc.compile(net.model(out), rule="epsilon", rule_map=["product=gate-constant"])
    X = CASES.inputs("se_gate-constant", "epsilon", 2)
    run = lambda m: oracle.run(oracle.session(m), X)["relevance"]
    np.testing.assert_array_equal(run(default), run(pinned))


def test_product_pattern_takes_only_product_rules():
    net, out = CASES.net("se_half")
    with pytest.raises(LrpcError, match="products of two activations take the rule gate-constant or half"):
        lrpc.compile(net.model(out), rule_map=["product=epsilon"])
    with pytest.raises(LrpcError, match="matches no product of two activations"):
        lrpc.compile(net.model(out), rule_map=["conv*=half"])


def test_gate_constant_needs_a_gate():
    """a·b of two plain activations: no factor is sigmoid-like, so gate-constant cannot say which to hold."""

    def build(g):
        a = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))
        b = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))
        return g.gemm(g.flatten(g.combine("Mul", a, b)), 4)

    net = graphnet.GraphNet((2, 5, 5))
    model = net.model(build(net))
    with pytest.raises(LrpcError, match="neither factor .* is a gate"):
        lrpc.compile(model, rule="epsilon", rule_map=["product=gate-constant"])
    lrpc.compile(model, rule="epsilon")  # the default for such a product is half


def test_inspect_names_what_was_recognised():
    from lrpc.api import plan
    from lrpc.describe import describe_plan

    net, out = CASES.net("se_half")
    text, refused = describe_plan("se.onnx", plan(net.model(out), rule="epsilon", rule_map=["product=half"]))
    assert refused == 0
    assert "SiLU" in text and "gate" in text and "half" in text
