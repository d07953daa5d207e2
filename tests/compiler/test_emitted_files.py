"""Every emitted file: checker, onnxruntime with all optimizations, batch 1 and 16, folded weights."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import lrpc
from lrpc_runtime import Explainer
from nets import small_cnn

RULES = ["zero", "epsilon", "zplus", "alpha2beta1", "w2", "flat", "gamma", "zbox:low=-3,high=3"]


def session(proto, optimized_path=None):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("rule", RULES)
def test_checker_runtime_and_batch_agreement(rule):
    proto = lrpc.compile(small_cnn(), rule=rule)
    onnx.checker.check_model(proto, full_check=True)
    assert (proto.ir_version, proto.opset_import[0].version) == (8, 17)
    assert [o.name for o in proto.graph.output] == ["probs", "relevance"]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"  # the dynamic batch stays dynamic
    x = np.random.default_rng(1).standard_normal((16, 2, 8, 8)).astype(np.float32)
    s = session(proto)
    probs16, rel16 = s.run(None, {"x": x})
    assert rel16.shape == x.shape and np.isfinite(rel16).all()
    reference = session(small_cnn()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(probs16, reference)  # forward outputs untouched
    for i in (0, 7, 15):
        probs1, rel1 = s.run(None, {"x": x[i : i + 1]})
        np.testing.assert_allclose(rel1[0], rel16[i], rtol=1e-5, atol=1e-6 * np.abs(rel16[i]).max())


@pytest.mark.parametrize("rule", ["alpha2beta1", "flat", "gamma", "w2", "zbox:low=-3,high=3"])
def test_weight_transforms_fold_at_session_creation(rule, tmp_path):
    """No node of the optimized graph computes on constants alone: W⁺, W², ones... are folded."""
    optimized = tmp_path / "optimized.onnx"
    proto = lrpc.compile(small_cnn(), rule=rule)
    session(proto, optimized)
    graph = onnx.load(optimized).graph
    constants = {t.name for t in graph.initializer}
    produced = set()
    for node in graph.node:
        inputs = [i for i in node.input if i]
        assert not inputs or any(i not in constants for i in inputs), (
            f"{node.op_type} {node.name} runs on constants only, per call"
        )
        produced.update(node.output)
    assert len(proto.SerializeToString()) < 2 * len(small_cnn().SerializeToString()) + 60_000


def test_metadata_and_runtime_contract():
    proto = lrpc.compile(small_cnn(), rule="alpha1beta0", target="input")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["lrpc.rule"] == "alphabeta:alpha=1,beta=0"
    assert meta["lrpc.target"] == "input" and meta["lrpc.version"] == lrpc.__version__
    assert json.loads(meta["lrpc.relevance"]) == {"x": "relevance"}
    assert [i.name for i in proto.graph.input] == ["x", "target"]
    explainer = Explainer(proto.SerializeToString())
    x = np.random.default_rng(2).standard_normal((5, 2, 8, 8)).astype(np.float32)
    by_class = [explainer.explain(x, target=k).relevance_map for k in range(5)]
    mixed = explainer.explain(x, target=np.arange(5)).relevance_map
    for n in range(5):
        np.testing.assert_allclose(mixed[n], by_class[n][n], rtol=1e-6, atol=1e-7)
    assert not np.allclose(by_class[0], by_class[1])
    with pytest.raises(ValueError, match="must be < 5"):
        explainer.explain(x, target=5)  # OneHot would give silent zeros: the runtime refuses


def test_fixed_target_and_max_target_agree_on_argmax():
    x = np.random.default_rng(3).standard_normal((4, 2, 8, 8)).astype(np.float32)
    probs, rel_max = session(lrpc.compile(small_cnn(), rule="epsilon")).run(None, {"x": x})
    for n, k in enumerate(probs.argmax(1)):
        _, rel_k = session(lrpc.compile(small_cnn(), rule="epsilon", target=int(k))).run(None, {"x": x[n : n + 1]})
        np.testing.assert_allclose(rel_k[0], rel_max[n], rtol=1e-5, atol=1e-7)


def test_opset_choice():
    assert lrpc.compile(small_cnn(), opset=21).opset_import[0].version == 21
    session(lrpc.compile(small_cnn(), opset=21))
    with pytest.raises(lrpc.LrpcError, match="16–26"):
        lrpc.compile(small_cnn(), opset=27)
    with pytest.raises(lrpc.LrpcError, match="does not downgrade"):
        lrpc.compile(small_cnn(opset=20), opset=18)


def test_opset13_model_is_upgraded():
    old = small_cnn(opset=13)
    proto = lrpc.compile(old, rule="epsilon")
    assert proto.opset_import[0].version == 17
    x = np.random.default_rng(4).standard_normal((2, 2, 8, 8)).astype(np.float32)
    _, rel = session(proto).run(None, {"x": x})
    _, expected = session(lrpc.compile(small_cnn(), rule="epsilon")).run(None, {"x": x})
    np.testing.assert_allclose(rel, expected, rtol=1e-6)
