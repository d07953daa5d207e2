"""Each linear layer type under each LRP rule, against the float64 oracle (tests/oracle/).

Two models per layer: the layer alone (its output, flattened, are the logits: R_out = onehot * z)
and layer -> Relu -> Gemm (so the tested layer receives a non-trivial R_out). lrpc's float32 graph
runs in onnxruntime; the oracle runs in float64 on the same float32 weights and inputs.
"""

from __future__ import annotations

import functools

import lrpc
import numpy as np
import onnxruntime as ort
import pytest

import oracle
from oracle import Net

TOL = 1e-5
BATCH = 3

# name -> (per-sample input shape, adds the tested layer to a Net)
LAYERS = {
    # Gemm
    "gemm_transB0": ((10,), lambda n: n.gemm(8, trans_b=0)),
    "gemm_transB1": ((10,), lambda n: n.gemm(8, trans_b=1)),
    "gemm_alpha_beta_transB0": ((10,), lambda n: n.gemm(8, trans_b=0, alpha=0.7, beta=1.8)),
    "gemm_alpha_beta_transB1": ((10,), lambda n: n.gemm(8, trans_b=1, alpha=1.6, beta=0.4)),
    "gemm_nobias_transB0": ((10,), lambda n: n.gemm(8, trans_b=0, bias=False)),
    "gemm_nobias_alpha_transB1": ((10,), lambda n: n.gemm(8, trans_b=1, alpha=2.5, bias=False)),
    "gemm_bias_1xn": ((10,), lambda n: n.gemm(8, trans_b=1, beta=0.5, bias_2d=True)),
    # MatMul by a constant [k, m] (+ Add of a constant bias)
    "matmul2d_add": ((10,), lambda n: n.matmul(8)),
    "matmul2d_add_bias_first": ((10,), lambda n: n.matmul(8, bias_first=True)),
    "matmul2d_nobias": ((10,), lambda n: n.matmul(8, bias=False)),
    "matmul3d_add": ((4, 6), lambda n: n.matmul(5)),
    "matmul3d_nobias": ((4, 6), lambda n: n.matmul(5, bias=False)),
    # Conv1d
    "conv1d_pad1": ((3, 12), lambda n: n.conv(4, (3,), pads=(1, 1))),
    "conv1d_s2_d2_asym": ((3, 13), lambda n: n.conv(4, (3,), strides=(2,), dilations=(2,), pads=(2, 0))),
    # Conv2d
    "conv2d_s2_pads_0110": ((3, 9, 8), lambda n: n.conv(4, (3, 3), strides=(2, 2), pads=(0, 1, 1, 0))),
    "conv2d_s2_nodiv": ((3, 8, 8), lambda n: n.conv(4, (3, 3), strides=(2, 2))),  # (8 - 3) % 2 = 1
    "conv2d_rect_s21": ((2, 7, 9), lambda n: n.conv(3, (2, 3), strides=(2, 1), pads=(1, 0, 0, 2))),
    "conv2d_dilation2": ((3, 9, 9), lambda n: n.conv(4, (3, 3), dilations=(2, 2), pads=(1, 2, 2, 1))),
    "conv2d_dil2_s2": ((2, 10, 9), lambda n: n.conv(3, (3, 3), strides=(2, 2), dilations=(2, 2), pads=(1, 1, 0, 0))),
    "conv2d_same_upper_s2": ((3, 9, 8), lambda n: n.conv(4, (4, 3), strides=(2, 2), auto_pad="SAME_UPPER")),
    "conv2d_same_lower_s2": ((3, 9, 8), lambda n: n.conv(4, (4, 3), strides=(2, 2), auto_pad="SAME_LOWER")),
    "conv2d_valid": ((3, 7, 7), lambda n: n.conv(4, (3, 3), auto_pad="VALID")),
    "conv2d_nobias": ((3, 8, 8), lambda n: n.conv(4, (3, 3), pads=(1, 1, 1, 1), bias=False)),
    "conv2d_group2": ((4, 7, 7), lambda n: n.conv(6, (3, 3), pads=(1, 1, 1, 1), group=2)),
    "conv2d_depthwise": ((4, 7, 7), lambda n: n.conv(4, (3, 3), pads=(1, 1, 1, 1), group=4)),
    "conv2d_depthwise_x2_s2": ((3, 8, 8), lambda n: n.conv(6, (3, 3), strides=(2, 2), pads=(1, 1, 1, 1), group=3)),
    # Conv3d
    "conv3d": ((2, 5, 5, 4), lambda n: n.conv(3, (3, 3, 3), pads=(1, 1, 1, 1, 1, 1))),
    "conv3d_s2": ((2, 6, 5, 5), lambda n: n.conv(3, (3, 2, 3), strides=(2, 2, 1), pads=(1, 0, 1, 0, 1, 0))),
}

RULES = [r for r in oracle.RULES if r != "alpha1beta0"]  # alpha1beta0 = zplus; tested end to end


@functools.lru_cache(maxsize=None)
def build(layer: str, depth: str, seed: int = 1, dtype=np.float32):
    shape, add = LAYERS[layer]
    net = Net(shape, seed=seed)
    add(net)
    if depth == "two":
        net.relu()
    if len(net.shape) > 1:
        net.flatten()
    if depth == "two":
        net.gemm(6, trans_b=1)
    return net.model(dtype), net.layers


@pytest.mark.parametrize("target", ["max", "min"])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("depth", ["single", "two"])
@pytest.mark.parametrize("layer", LAYERS)
def test_layer_matches_oracle(layer, depth, rule, target):
    """target "max": lrpc's default (argmax). target "min": each sample's smallest (negative) logit,
    fed through the `target` input: a negative start relevance, which exercises the negative-z
    branches (gamma's z < 0 group, stab's -eps) that a ReLU net explained at its argmax never reaches."""
    model, layers = build(layer, depth)
    shape = LAYERS[layer][0]
    if target == "max":
        X = oracle.pick_inputs(layers, rule, shape, BATCH, seed=7)
        oracle.check_against_oracle(model, layers, X, rule, tol=TOL)
    else:
        X = oracle.pick_inputs(layers, rule, shape, BATCH, seed=7, target="min")
        t = np.array([np.argmin(oracle.forward(layers, x)[-1]) for x in X], np.int64)
        assert np.all(oracle.explain(layers, X.astype(np.float64), oracle.RULES[rule], t)[0][np.arange(BATCH), t] < 0)
        oracle.check_against_oracle(model, layers, X, rule, target=t, tol=TOL)


DOUBLE_LAYERS = [name for name in LAYERS if not name.startswith("conv")]  # onnxruntime: no double Conv


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("depth", ["single", "two"])
@pytest.mark.parametrize("layer", DOUBLE_LAYERS)
def test_layer_float64_matches_oracle_tightly(layer, depth, rule):
    """The same layers as float64 models: with no float32 rounding, agreement to 1e-12.
    (Fixed target: lrpc's argmax/fed targets do not run in double, see test_oracle_networks.)"""
    model, layers = build(layer, depth, dtype=np.float64)
    X = oracle.pick_inputs(layers, rule, LAYERS[layer][0], BATCH, seed=7, target=1)
    oracle.check_against_oracle(model, layers, X, rule, target=1, tol=1e-12)


# ---------------------------------------------------------------------------------------------
# z == 0 exactly: the zero rule drops the unit's relevance, stab(0) = +eps for the others
# ---------------------------------------------------------------------------------------------


def _zero_denominator_net():
    """x [N, 2] -> Gemm W = [[1, -1], [1, 1]] (no bias) -> Sigmoid -> Gemm V = [[1, 1]] -> logit.

    At x = (1, 1) unit 0 has z = 1 - 1 = 0 exactly (in float32 as well) but Sigmoid(0) = 1/2, so
    relevance does reach it: the z == 0 conventions of the rules decide what happens to it."""
    net = Net((2,))
    net.inits.update(w1=np.array([[1, -1], [1, 1]], np.float32), w2=np.array([[1, 1]], np.float32))
    net._node("Gemm", ["w1"], transB=1)
    net.layers.append(oracle.gemm_layer(net.inits["w1"], None, trans_b=1))
    net.shape = (2,)
    net.activation("Sigmoid", lambda x: 1 / (1 + np.exp(-x)))
    net._node("Gemm", ["w2"], transB=1)
    net.layers.append(oracle.gemm_layer(net.inits["w2"], None, trans_b=1))
    net.shape = (1,)
    return net


@pytest.mark.parametrize("rule", RULES)
def test_exactly_zero_denominator(rule):
    net = _zero_denominator_net()
    X = np.array([[1.0, 1.0], [2.0, 2.0], [0.5, -1.0]], np.float32)
    R, R_oracle, _ = oracle.check_against_oracle(net.model(), net.layers, X, rule, tol=TOL)
    if rule == "zero":  # at x = (1, 1): unit 0 (z = 0) is dropped; unit 1 has R1 = sigmoid(2), z1 = 2
        s1 = 1 / (1 + np.exp(-2.0)) / 2
        np.testing.assert_allclose(R[0], [s1, s1], rtol=1e-6)
    if rule == "epsilon":  # stab(0) = +1e-6: unit 0 sends +R0/eps to x0 and -R0/eps to x1
        assert R[0, 0] > 1e4 and R[0, 1] < -1e4


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "gamma"])
def test_a_flattened_affine_layer_runs_its_forward_as_the_model_had_it(rule):
    """MatMulAddToGemm flattens x [N, 4, 6] @ W + b into a Gemm for the rule; the emitted forward is
    MatMul + Add on x's own rank again (no forward Gemm reads a flattening Reshape), the forward output
    is the plain model's bit for bit, and the relevance still matches the oracle."""
    model, layers = build("matmul3d_add", "two")
    proto = lrpc.compile(model, rule=rule)
    producers = {out: n for n in proto.graph.node for out in n.output}
    forward = [n for n in proto.graph.node if not n.name.startswith("lrp/")]
    flat_gemms = [n for n in forward if n.op_type == "Gemm" and producers.get(n.input[0], n).op_type == "Reshape"]
    assert not flat_gemms and any(n.op_type == "MatMul" for n in forward)
    X = oracle.pick_inputs(layers, rule, LAYERS["matmul3d_add"][0], BATCH, seed=7)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    np.testing.assert_array_equal(run(proto)[0], run(model)[0])
    oracle.check_against_oracle(model, layers, X, rule, tol=TOL, compiled=proto)
