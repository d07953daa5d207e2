"""The explained file of a static QDQ model runs onnxruntime's integer kernels where the quantized model does.

onnxruntime fuses each Dequantize → layer → Quantize unit into an integer kernel (QLinearConv, …) whose
requantization rounds some values one step away from the float math. The rules read the layer outputs z
and the dequantized activations x̂, which would keep every unit of the explained file's forward unfused;
passes/quantized.py gives them copies of the layers and turns the int8 activation pairs onnxruntime turns
into uint8 (QDQS8ToU8Transformer, x86) into uint8 itself. Checked here: the outputs equal the deployed
model's bit for bit where its kernels and the float math differ, also in verify's float32 run (which reads
the quantizers' integers as extra outputs), and a pair onnxruntime leaves int8 stays int8.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import helper

import lrpc
import nets
from oracle import run, session

pytest.importorskip("onnxruntime.quantization")
import test_quantized as tq  # noqa: E402

from lrpc.verify.float32 import run_float32  # noqa: E402
from lrpc.verify.quantized import activation_quantizers  # noqa: E402


def depthwise_stack(channels=16, seed=1) -> onnx.ModelProto:
    """Conv-Relu, depthwise Conv-Relu, pointwise Conv-Relu (channels wide), GlobalAveragePool, Flatten, Gemm on
    [N, 2, 8, 8]: a MobileNet block."""
    rng = np.random.default_rng(seed)
    he = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)
    bias = lambda n: rng.normal(0, 0.1, n).astype(np.float32)
    c = channels
    init = {"w1": he(c, 2, 3, 3), "b1": bias(c), "wd": he(c, 1, 3, 3), "bd": bias(c), "wp": he(c, c, 1, 1)}
    init.update({"bp": bias(c), "w3": he(5, c), "b3": bias(5)})
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], name="dwconv", pads=[1, 1, 1, 1], group=c),
        helper.make_node("Relu", ["cd"], ["rd"], name="relu_dw"),
        helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"], name="pwconv"),
        helper.make_node("Relu", ["cp"], ["rp"], name="relu_pw"),
        helper.make_node("GlobalAveragePool", ["rp"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1),
    ]
    return nets.make_model(nodes, [nets.tensor("x", ["N", 2, 8, 8])], [nets.tensor("logits", ["N", 5])], init)


tq.NETS["depthwise_stack"] = depthwise_stack


def _float_math(q: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The quantized model with no onnxruntime optimization: every unit in float, between its quantizers."""
    import onnxruntime as ort

    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(q.SerializeToString(), plain, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def fused(model: onnx.ModelProto, folder) -> set[str]:
    """The names of the nodes onnxruntime runs as integer kernels (QLinearConv, QGemm, …; each named after the
    layer it fused, plus "_token_N")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    kernels = [n for n in onnx.load(folder / "optimized.onnx").graph.node if n.op_type.startswith(("QLinear", "QGemm"))]
    return {re.sub(r"_token_\d+$", "", n.name) for n in kernels}


@pytest.mark.parametrize("name", ["conv_stack", "depthwise_stack"])
@pytest.mark.parametrize("how", ["composite", "epsilon"])
def test_outputs_equal_onnxruntimes_integer_kernels(how, name, tmp_path, tmp_path_factory):
    """Per-channel weights, int8 activations (quantize_static's default); 64 samples. Before passes/quantized.py
    made the pairs uint8, onnxruntime fused none of the explained file's convs (conv_stack: logits 4.5e-3 off)."""
    q = tq.quantized(name, True, tmp_path_factory)
    x = tq._x(n=64)
    deployed = session(q).run(None, {"x": x})[0]
    if name == "conv_stack":  # there the kernels and the float math differ (depthwise_stack's agree on these x)
        assert np.abs(_float_math(q, x) - deployed).max() > 1e-4
    explained = lrpc.compile(q, **tq.OPTIONS[how])
    assert {"conv1", "fc"} <= fused(q, tmp_path) <= fused(explained, tmp_path)
    np.testing.assert_array_equal(run(session(explained), x)["logits"], deployed)


def test_verifys_float32_run_computes_the_deployed_outputs(tmp_path_factory):
    """verify feeds its float64 check the integers of the float32 run's quantizers, which it reads as extra
    graph outputs: with them the file must still run the deployed kernels, so that those are the deployed
    model's integers (conv_stack: 4.5e-3 off them before)."""
    q = tq.quantized("conv_stack", True, tmp_path_factory)
    explained = lrpc.compile(q)
    quantizers = activation_quantizers(explained, explained)
    assert len(quantizers) >= 4
    x = tq._x(n=64)
    got = run_float32(explained, {"x": x}, "logits", quantizers)
    np.testing.assert_array_equal(got["logits"], session(q).run(None, {"x": x})[0])


def _zero_point_types(model: onnx.ModelProto) -> dict[str, int]:
    """Each QuantizeLinear's output name → its zero point's element type."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    return {n.output[0]: types[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_a_pair_onnxruntime_leaves_int8_stays_int8(tmp_path_factory):
    """residual_dw: relu1's DequantizeLinear is read by the depthwise conv and the skip Add; onnxruntime gives
    each its own copy, the QuantizeLinear has two readers then and keeps int8, so the units beside it run in
    float in the quantized model. The explained file keeps that pair int8 (and its outputs exact); the pairs with
    one reader become uint8."""
    q = tq.quantized("residual_dw", True, tmp_path_factory)
    readers = {}
    for node in q.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    dq_of = {n.input[0]: n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    shared = {y for y in _zero_point_types(q) if readers.get(dq_of.get(y), 0) > 1}
    assert shared and set(_zero_point_types(q).values()) == {onnx.TensorProto.INT8}
    explained = lrpc.compile(q)
    types = {y: t for y, t in _zero_point_types(explained).items() if y in _zero_point_types(q)}
    assert {types[y] for y in shared} == {onnx.TensorProto.INT8}
    assert {t for y, t in types.items() if y not in shared} == {onnx.TensorProto.UINT8}
    x = tq._x(n=64)
    np.testing.assert_array_equal(run(session(explained), x)["logits"], session(q).run(None, {"x": x})[0])
