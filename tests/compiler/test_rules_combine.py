"""Add / Sub / Sum of activations (residual connections), with broadcasting, and Add/Sub/Mul/Div by
constants, against the float64 graph oracle (tests/oracle/graphnet.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import lrpc
import oracle
from oracle import graphnet
from lrpc.builder import Builder
from lrpc.rules.combine import unbroadcast
from oracle.graphnet import Cases

RULES = [r for r in oracle.RULES if r != "alpha1beta0"]  # = zplus


def _residual_relu(g):
    """Both summands non-negative (post-ReLU): x → conv → relu → a;  a → conv → relu → b;  relu(a + b)."""
    a = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
    b = g.relu(g.conv(a, 4, (3, 3), pads=[1, 1, 1, 1]))
    c = g.relu(g.conv(g.combine("Add", a, b), 3, (3, 3), strides=[2, 2]))
    return g.gemm(g.flatten(c), 5)


def _resnet_block(g):
    """A ResNet basic block: relu(conv(relu(conv(h))) + h), the first summand of either sign; twice."""
    h = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
    for _ in range(2):
        h = g.relu(g.combine("Add", g.conv(g.relu(g.conv(h, 4, (3, 3), pads=[1, 1, 1, 1])), 4, (1, 1)), h))
    return g.gemm(g.relu(g.gemm(g.flatten(h), 12)), 5)


def _sub_sum_broadcast(g):
    """Sub of two activations, Sum of three with a [C, 1, 1] summand broadcast over space (its relevance
    sums back), Add of an activation that broadcasts along the channels."""
    a = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
    b = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
    d = g.combine("Sub", a, b)
    m = g.reduce("GlobalMaxPool", b, [1, 2])  # (4, 1, 1)
    s = g.combine("Sum", g.relu(d), a, m)
    one = g.conv(a, 1, (1, 1))  # (1, H, W) + (4, H, W)
    t = g.combine("Add", one, g.relu(g.conv(s, 4, (3, 3), pads=[1, 1, 1, 1])))
    return g.gemm(g.flatten(g.relu(t)), 5)


def _constants(g):
    """Per-channel scale and shift as separate constant ops, x / c, c − x, a Sum with a constant, and a
    constant that broadcasts the activation to more channels (its relevance sums back). A ReLU on each
    side keeps them apart from the convolutions (which canonization may fold neighbouring constants into)."""
    rng = np.random.default_rng(7)
    c = lambda *s: rng.uniform(0.5, 1.5, s).astype(np.float32)
    a = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
    a = g.relu(g.combine("Add", g.combine("Mul", a, c(1, 4, 1, 1)), c(4, 1, 1) - 1.0))
    a = g.relu(g.combine("Sub", c(1, 4, 1, 1), g.combine("Div", a, c(1))))
    conv = lambda: g.relu(g.conv(a, 4, (3, 3), strides=[2, 2]))
    b = g.relu(g.combine("Sum", conv(), c(4, 1, 1), conv()))
    one = g.relu(g.conv(b, 1, (1, 1)))  # (1, 2, 2) + (3, 1, 1) → (3, 2, 2)
    return g.gemm(g.flatten(g.relu(g.combine("Add", one, c(3, 1, 1)))), 5)


CASES = Cases(
    {
        "residual_relu": ((2, 6, 6), _residual_relu),
        "resnet_block": ((2, 6, 6), _resnet_block),
        "sub_sum_broadcast": ((2, 5, 5), _sub_sum_broadcast),
        "constants": ((2, 6, 6), _constants),
    }
)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("net", CASES.builders)
def test_matches_oracle(net, rule):
    CASES.check(net, rule)


@pytest.mark.parametrize("net", CASES.builders)
def test_batch_equals_single_samples(net):
    CASES.check_batch(net, "epsilon")


@pytest.mark.parametrize("net", ["residual_relu", "resnet_block", "sub_sum_broadcast"])
def test_bias_free_net_conserves_under_zero(net):
    """Proportional splits keep relevance: the input relevance sums to the logit. (Not "constants": a
    unit whose value is all constant, e.g. Sum(0, 0, c), keeps relevance its activations cannot take.)"""
    R, R_oracle, y = CASES.check(net, "zero", batch=4, bias=False)
    logit = y.max(axis=1)
    np.testing.assert_allclose(R.reshape(4, -1).astype(np.float64).sum(axis=1), logit, rtol=1e-5)
    np.testing.assert_allclose(R_oracle.reshape(4, -1).sum(axis=1), logit, rtol=1e-9)


def test_emitted_file_passes_the_checker():
    onnx.checker.check_model(CASES.compiled("sub_sum_broadcast", "gamma"), full_check=True)


def test_product_without_a_gate_under_gate_constant_is_reported_by_name():
    """Products of two activations have rules of their own (test_rules_gates_norms.py); one that cannot
    take the rule asked for names its node (neither factor here is a gate or an activation's output)."""
    g = graphnet.GraphNet((6,))
    a, b = g.gemm(g.relu(g.gemm("x", 4)), 4), g.gemm("x", 4)
    out = g.gemm(g.combine("Mul", a, b), 3)
    with pytest.raises(lrpc.LrpcError, match=r"'mul\d+' \(Mul\): rule gate-constant"):
        lrpc.compile(g.model(out), rule_map=["product=gate-constant"])


def _float64_net(g):
    a = g.relu(g.gemm("x", 8))
    b = g.gemm(a, 8)
    c = g.combine("Sub", g.gemm("x", 8), b)
    return g.gemm(g.relu(g.combine("Sum", a, b, g.relu(c))), 5)


@pytest.mark.parametrize("rule", ["zero", "epsilon", "alpha2beta1", "gamma"])
def test_float64_model_matches_tightly(rule):
    g = graphnet.GraphNet((10,), seed=5)
    out = _float64_net(g)
    X = graphnet.pick_inputs(g, out, rule, 3, seed=4)
    graphnet.check(g, out, X, rule, tol=1e-12, dtype=np.float64)


@pytest.mark.parametrize("v_shape, axes", [((3, 1), (0, 2)), ((2, 3, 4), ()), ((1, 3, 4), (0,)), ((4,), (0, 1))])
def test_unbroadcast_without_shapes(v_shape, axes):
    """With the shapes unknown, unbroadcast sums the broadcast axes found at run time (none for operands of
    one shape)."""
    graph = ir.Graph([], [], nodes=[], name="g", opset_imports={"": 17})
    r = ir.Value(name="r", type=ir.TensorType(ir.DataType.FLOAT))
    v = ir.Value(name="v", type=ir.TensorType(ir.DataType.FLOAT))
    graph.inputs.extend([r, v])
    b = Builder(graph, ir.DataType.FLOAT)
    out = b.op("Identity", r)  # the broadcast output: only its shape is read
    graph.outputs.append(unbroadcast(b, r, v, out))
    assert out.shape is None and v.shape is None
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=8))
    R = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    got = oracle.session(proto).run(None, {"r": R, "v": np.zeros(v_shape, np.float32)})[0]
    np.testing.assert_allclose(got, R.sum(axis=axes).reshape(v_shape), rtol=1e-6)


def test_unbroadcast_without_shapes_before_opset_13_is_refused():
    graph = ir.Graph([], [], nodes=[], name="g", opset_imports={"": 11})
    r, v = (ir.Value(name=n, type=ir.TensorType(ir.DataType.FLOAT)) for n in "rv")
    graph.inputs.extend([r, v])
    b = Builder(graph, ir.DataType.FLOAT)
    with pytest.raises(lrpc.LrpcError, match="opset 13 or later"):
        unbroadcast(b, r, v, b.op("Identity", r))
