"""Canonized models explain exactly: lrpc's relevance equals the float64 oracle applied to the
canonized network (oracle/onnx_reader.py builds it at the matrix level, without lrpc), for tf2onnx/Keras 3
fixtures and torch.onnx exports; average pooling keeps channels apart under every rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from nets import make_model, tensor

import lrpc
import oracle
from oracle import dag
from oracle.onnx_reader import read_model

FIXTURES = Path(__file__).parents[1] / "fixtures" / "keras"
RULES = ["epsilon", "zero", "alpha2beta1", "zplus", "flat", "w2", "gamma", "zbox:low=-1.5,high=2"]


def compare(model: onnx.ModelProto, rule: str, batch=4, seed=0, tol=1e-5, **compile_args):
    """Compile, run in onnxruntime on well-conditioned inputs, and compare with the oracle."""
    input_ = model.graph.input[0]
    net = read_model(model)
    X = dag.pick_inputs(net, rule, None, batch, seed=seed)
    sess = oracle.session(lrpc.compile(model, rule=rule, **compile_args))
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {input_.name: X})))
    logits, R = dag.explain(net, X.astype(np.float64), rule)
    first = outputs[model.graph.output[0].name]
    expected = oracle.softmax(logits) if model.graph.node[-1].op_type == "Softmax" else logits
    oracle.assert_rel_close(first, expected, 1e-5, what="model output")
    oracle.assert_rel_close(outputs["relevance"], R, tol)
    return outputs["relevance"], R


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(
    "name",
    ["cnn_avgpool_bn", "cnn_avgpool_bn_softmax", "cnn_avgpool_bn_export", "dense_bn", "bn_first", "avgpool_same_odd"],
)
def test_keras_fixtures_match_the_oracle(name, rule):
    compare(onnx.load(FIXTURES / f"{name}.onnx"), rule)


@pytest.mark.torch
@pytest.mark.parametrize("rule", ["epsilon", "alpha1beta0", "flat", "gamma"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_torch_export_with_batchnorm_and_average_pooling_matches_the_oracle(rule, dynamo, tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AvgPool2d(3, 2, padding=1, count_include_pad=False, ceil_mode=True),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 6, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
        nn.BatchNorm1d(5),
    )
    for bn in (m for m in net if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))):
        bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    path = tmp_path / "net.onnx"
    kwargs = dict(dynamo=True) if dynamo else dict(dynamo=False, do_constant_folding=False)
    torch.onnx.export(
        net,
        (torch.randn(2, 3, 9, 9),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}},
        opset_version=18 if dynamo else 17,
        **kwargs,
    )
    model = onnx.load(path)
    assert {"BatchNormalization", "AveragePool"} <= {n.op_type for n in model.graph.node} or dynamo
    compare(model, rule)


# ---------------------------------------------------------------------------------------------
# The original report: average pooling must not leak relevance across channels
# ---------------------------------------------------------------------------------------------


def pooled_model(dense_kernel: bool, channels=3):
    """x [N, C, 6, 6] → average 2×2 pooling → Flatten → logits; as AveragePool, or as the leaky
    "dense" Conv some converters write (weight[c, c′] = 1/4 if c = c′ else 0 — numerically the same)."""
    if dense_kernel:
        w = np.zeros((channels, channels, 2, 2), np.float32)
        w[np.arange(channels), np.arange(channels)] = 0.25
        pool = helper.make_node("Conv", ["x", "w"], ["p"], kernel_shape=[2, 2], strides=[2, 2])
        init = {"w": w}
    else:
        pool = helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2])
        init = {}
    nodes = [pool, helper.make_node("Flatten", ["p"], ["logits"])]
    return make_model(nodes, [tensor("x", ["N", channels, 6, 6])], [tensor("logits", ["N", channels * 9])], init)


def channel_relevance(model, rule, unit, channels=3):
    """Relevance per input channel when output unit `unit` (in channel unit // 9) is explained."""
    x = np.random.default_rng(0).uniform(0.5, 1.5, (1, channels, 6, 6)).astype(np.float32)
    sess = oracle.session(lrpc.compile(model, rule=rule, target=unit))
    relevance = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))["relevance"]
    return np.abs(relevance[0]).sum(axis=(1, 2))


@pytest.mark.parametrize("rule", ["flat", "w2", "epsilon", "alpha1beta0"])
def test_average_pooling_keeps_channels_apart(rule):
    for unit in (4, 13, 22):  # one output unit in each channel
        per_channel = channel_relevance(pooled_model(dense_kernel=False), rule, unit)
        others = np.delete(per_channel, unit // 9)
        assert per_channel[unit // 9] > 0 and np.all(others == 0), per_channel


def test_the_channel_check_catches_a_dense_kernel():
    """The same check on the dense-kernel pooling: flat sees its structure (all C×C taps), and
    relevance leaks to every channel. (w2 squares the zeros of this kernel and does not leak here;
    it leaks as soon as off-diagonal weights are non-zero.)"""
    per_channel = channel_relevance(pooled_model(dense_kernel=True), "flat", unit=4)
    assert np.all(np.delete(per_channel, 0) > 0.1 * per_channel[0]), per_channel


# ---------------------------------------------------------------------------------------------
# Output activation, input normalization
# ---------------------------------------------------------------------------------------------


def test_keep_output_activation_explains_the_probability():
    model = onnx.load(FIXTURES / "cnn_avgpool_bn_softmax.onnx")
    x = np.load(FIXTURES / "cnn_avgpool_bn_softmax.npz")["x"]
    runs = {}
    for keep in (False, True):
        sess = oracle.session(lrpc.compile(model, rule="epsilon", keep_output_activation=keep))
        runs[keep] = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    probs = runs[True]["probs"]
    # the same explanation, rescaled per sample from the logit to the probability it starts with
    base = oracle.session(lrpc.compile(onnx.load(FIXTURES / "cnn_avgpool_bn.onnx"), rule="epsilon"))
    logits = base.run(None, {"input": x})[0]
    t = probs.argmax(axis=1)
    ratio = probs[np.arange(len(x)), t] / logits[np.arange(len(x)), t]
    np.testing.assert_allclose(
        runs[True]["relevance"], runs[False]["relevance"] * ratio[:, None, None, None], rtol=1e-4, atol=1e-7
    )


def test_zbox_bounds_are_in_raw_input_units_through_a_normalization():
    """(x − μ)/σ per pixel before a padded conv stays in the graph; zbox(l, h) given in raw units
    equals zbox on the normalized input with bounds (l − μ)/σ, (h − μ)/σ (σ > 0)."""
    rng = np.random.default_rng(3)
    mu, sigma = rng.uniform(-0.3, 0.3, (1, 2, 5, 5)), rng.uniform(0.5, 2.0, (1, 2, 5, 5))
    w1, w2 = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((4, 75))
    nodes = [
        helper.make_node("Sub", ["x", "mu"], ["c"]),
        helper.make_node("Div", ["c", "sigma"], ["v"]),
        helper.make_node("Conv", ["v", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "w2"], ["logits"], transB=1),
    ]
    init = {k: v.astype(np.float32) for k, v in dict(mu=mu, sigma=sigma, w1=w1, w2=w2).items()}
    model = make_model(nodes, [tensor("x", ["N", 2, 5, 5])], [tensor("logits", ["N", 4])], init)
    low, high = 0.0, 1.0
    x = rng.uniform(low, high, (3, 2, 5, 5)).astype(np.float32)
    sess = oracle.session(lrpc.compile(model, rule=f"zbox:low={low},high={high}", target=1))
    relevance = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))["relevance"]
    m32, s32 = init["mu"].astype(np.float64), init["sigma"].astype(np.float64)
    conv = oracle.conv_layer(init["w1"], None, (2, 5, 5), pads=[1, 1, 1, 1])
    fc = oracle.gemm_layer(init["w2"], None, trans_b=1)
    lo, hi = ((low - m32) / s32).reshape(-1), ((high - m32) / s32).reshape(-1)
    for n in range(len(x)):
        v = ((x[n] - m32[0]) / s32[0]).reshape(-1)
        h = conv.W @ v
        y = fc.W @ np.maximum(h, 0)
        R = np.zeros(4)
        R[1] = y[1]
        R = oracle.rule_zbox(fc, np.maximum(h, 0), R, low, high)  # the Relu between passes R through
        R_in = _zbox_tensor_bounds(conv, v, R, lo, hi)
        oracle.assert_rel_close(relevance[n : n + 1], R_in.reshape(1, 2, 5, 5), 1e-4)


def _zbox_tensor_bounds(L, x, R, lo, hi, eps=oracle.EPS):
    Wp, Wn = oracle.pos(L.W), oracle.neg(L.W)
    z = L.W @ x - Wp @ lo - Wn @ hi
    s = R / oracle.stab(z, eps)
    return x * (L.W.T @ s) - lo * (Wp.T @ s) - hi * (Wn.T @ s)


def test_verbose_compile_reports_each_canonization(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "explained.onnx"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrpc.cli",
            "compile",
            str(FIXTURES / "cnn_avgpool_bn.onnx"),
            "-o",
            str(out),
            "--verbose",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert sum("AveragePoolToDepthwiseConv:" in line for line in lines) == 3
    assert sum("FoldChannelAffine:" in line and "into the preceding" in line for line in lines) == 2
    assert any("border divisor map" in line for line in lines) and out.exists()
    assert not any("ShapeInference" in line for line in lines)
