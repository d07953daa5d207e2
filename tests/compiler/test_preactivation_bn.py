"""A BatchNormalization with no linear neighbour (a pre-activation BN: after a residual Add, before a
ReLU and a padded Conv) is a per-channel affine layer of its own, however it is written.

tf2onnx writes Keras' BN as `Mul → Add` by per-channel constants; torch.onnx as a BatchNormalization
node. Both become one depthwise 1×1 Conv (weight s, bias t), whose bias takes its share of the
relevance; before that fix the Add passed relevance unchanged and ResNet50V2's maps summed to 1e24
(benchmarks/KERAS_VERIFY.md, bug 1). Checked against:

- the float64 DAG oracle (oracle/onnx_reader.py: the BN is a diagonal Linear there), every rule, both forms;
- torch's gradient × input in float64: on a ReLU net LRP-0 is x ⊙ ∇f exactly, biases and all;
- what must stay as it is: an input normalization before the first layer (zbox reads it and its
  relevance is the input's) and a lone per-channel scale (relevance passes it unchanged).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import lrpc
import oracle
from lrpc.api import plan
from oracle.dag import explain, pick_inputs
from oracle.onnx_reader import read_model

C = 4
RULES = ["zero", "epsilon", "alpha2beta1", "zplus", "gamma", "epsilon;first=flat", "zplus;first=w2"]
# (flat and w2 on every layer of a residual net are ill-conditioned in float32: test_architectures.py)


def weights(seed=1):
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, 0.5, (C, C, 3, 3)),
        "b1": rng.normal(0, 0.1, C),
        "w2": rng.normal(0, 0.5, (C, C, 3, 3)),
        "b2": rng.normal(0, 0.1, C),
        "wd": rng.normal(0, 0.5, (3, C)),
        "bd": rng.normal(0, 0.1, 3),
        "scale": rng.uniform(0.5, 1.5, C),
        "shift": rng.normal(0, 1, C),
    }


def residual_net(bn: str, w=None, lone_scale=False) -> onnx.ModelProto:
    """x → Conv → +x → BN → ReLU → Conv → +(+x) → GAP → Gemm, the BN written as `bn`:
    "mul_add" (tf2onnx's Mul → Add), "bn" (a BatchNormalization node) or "mul" (the scale alone)."""
    w = w or weights()
    f = lambda name, a: numpy_helper.from_array(np.asarray(a, np.float32), name)
    inits = [f(k, w[k]) for k in ("w1", "b1", "w2", "b2", "wd", "bd")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], pads=[1] * 4),
        helper.make_node("Add", ["h1", "x"], ["s1"]),
    ]
    if bn == "bn":
        inits += [f("g", w["scale"]), f("be", w["shift"]), f("mu", np.zeros(C)), f("var", np.ones(C))]
        nodes.append(helper.make_node("BatchNormalization", ["s1", "g", "be", "mu", "var"], ["n"], epsilon=0.0))
    else:
        inits.append(f("c1", w["scale"].reshape(C, 1, 1)))
        nodes.append(helper.make_node("Mul", ["s1", "c1"], ["m" if bn == "mul_add" else "n"]))
        if bn == "mul_add":
            inits.append(f("c2", w["shift"].reshape(C, 1, 1)))
            nodes.append(helper.make_node("Add", ["m", "c2"], ["n"]))
    nodes += [
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["h2"], pads=[1] * 4),
        helper.make_node("Add", ["h2", "s1"], ["s2"]),
        helper.make_node("GlobalAveragePool", ["s2"], ["g1"]),
        helper.make_node("Flatten", ["g1"], ["fl"]),
        helper.make_node("Gemm", ["fl", "wd", "bd"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "preact",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))


def torch_gradient_x_input(w, x):
    """x ⊙ ∇ y[target] of the same net in float64 (target: each sample's largest logit)."""
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    conv = torch.nn.functional.conv2d
    s1 = conv(xt, t["w1"], t["b1"], padding=1) + xt
    r = torch.relu(s1 * t["scale"][:, None, None] + t["shift"][:, None, None])
    y = (conv(r, t["w2"], t["b2"], padding=1) + s1).mean((2, 3)) @ t["wd"].T + t["bd"]
    y.gather(1, y.argmax(1, keepdim=True)).sum().backward()
    return (xt * xt.grad).detach().numpy()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("bn", ["mul_add", "bn"])
def test_both_forms_match_the_float64_oracle(bn, rule):
    model = residual_net(bn)
    net = read_model(model)
    X = pick_inputs(net, rule, "y", 3)
    _, want = explain(net, X, rule, "y")
    default, _, first = rule.partition(";first=")
    got = run(lrpc.compile(model, rule=default, rule_map=[f"first={first}"] if first else ()), X)["relevance"]
    err = oracle.rel_err_per_sample(got, want)
    assert np.all(err <= 1e-5), f"{bn}, {rule}: relative L2 error per sample {err}"


def test_lrp0_is_gradient_x_input_with_the_bn_as_mul_add():
    w = weights(seed=3)
    X = np.random.default_rng(0).normal(0, 1, (4, C, 8, 8)).astype(np.float32)
    got = run(lrpc.compile(residual_net("mul_add", w), rule="zero"), X)["relevance"]
    want = torch_gradient_x_input(w, X)
    gap = np.abs(got - want).reshape(4, -1).max(1) / np.abs(want).reshape(4, -1).max(1)
    assert gap.max() < 1e-4, f"LRP-0 vs x ⊙ ∇f per sample: {gap}"


def canonized_ops(model):
    return [n.op_type for n in plan(model, rule="epsilon").model.graph]


def test_the_pair_becomes_one_depthwise_conv_and_a_lone_scale_stays():
    pair, lone = canonized_ops(residual_net("mul_add")), canonized_ops(residual_net("mul"))
    assert pair.count("Conv") == 4 and "Mul" not in pair  # two convs, the BN, the global average pool
    assert lone.count("Conv") == 3 and lone.count("Mul") == 1


def test_a_lone_scale_passes_relevance_unchanged():
    """Without a shift the map is x ↦ s·x: relevance passes it (as the oracle has it), so LRP-0 is x ⊙ ∇f."""
    w = weights(seed=2) | {"shift": np.zeros(C)}
    X = np.random.default_rng(1).normal(0, 1, (3, C, 8, 8)).astype(np.float32)
    got = run(lrpc.compile(residual_net("mul", w), rule="zero"), X)["relevance"]
    want = torch_gradient_x_input(w, X)
    gap = np.abs(got - want).reshape(3, -1).max(1) / np.abs(want).reshape(3, -1).max(1)
    assert gap.max() < 1e-4, f"LRP-0 vs x ⊙ ∇f per sample: {gap}"


def test_an_input_normalization_before_a_padded_conv_stays_for_zbox():
    """x·S + T per channel on the model input (a Keras Normalization layer) is not made a layer: the first
    Conv records it for zbox bounds in raw units."""
    rng = np.random.default_rng(4)
    f = lambda name, a: numpy_helper.from_array(np.asarray(a, np.float32), name)
    inits = [
        f("s", rng.uniform(0.5, 2, (C, 1, 1))),
        f("t", rng.normal(0, 1, (C, 1, 1))),
        f("w", rng.normal(0, 0.5, (3, C, 3, 3))),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["m"]),
        helper.make_node("Add", ["m", "t"], ["v"]),
        helper.make_node("Conv", ["v", "w"], ["h"], pads=[1] * 4),
        helper.make_node("ReduceMax", ["h"], ["y"], axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    p = plan(model, rule="zbox:low=0,high=1")
    assert [n.op_type for n in p.model.graph][:3] == ["Mul", "Add", "Conv"]
    assert any("input normalization of 'x'" in line for line in p.changes), p.changes
