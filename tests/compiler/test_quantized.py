"""Static int8 QDQ models (onnxruntime.quantization.quantize_static, QuantFormat.QDQ), and QOperator refusal.

A QDQ model is explained through its dequantized weights w = (q − zp)·s, with relevance passing unchanged
through the activation QuantizeLinear/DequantizeLinear pairs. Checked here: the explained file computes the
quantized model's outputs exactly (its Q/DQ nodes are kept); its relevance matches lrpc's on the float
model with the dequantized weights and no Q/DQ, up to what the activation rounding changes; rule zero on a
bias-free net conserves relevance exactly through the pairs; a QOperator file exits 2 naming the node.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import lrpc
import nets
from oracle import rel_err_per_sample, run, session

quantization = pytest.importorskip("onnxruntime.quantization")
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static  # noqa: E402

from lrpc.passes.quantized import dequantized_constant  # noqa: E402

LRPC = Path(sys.executable).with_name("lrpc")


def residual_depthwise(seed=0) -> onnx.ModelProto:
    """Conv-Relu, depthwise Conv-Relu + the skip (Add), Relu, GlobalAveragePool, Flatten, Gemm on [N, 2, 8, 8]."""
    rng = np.random.default_rng(seed)
    he = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)
    init = {
        "w1": he(4, 2, 3, 3),
        "b1": rng.normal(0, 0.1, 4).astype(np.float32),
        "wd": he(4, 1, 3, 3),
        "bd": rng.normal(0, 0.1, 4).astype(np.float32),
        "w3": he(5, 4),
        "b3": rng.normal(0, 0.1, 5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], name="dwconv", pads=[1, 1, 1, 1], group=4),
        helper.make_node("Relu", ["cd"], ["rd"], name="relu_dw"),
        helper.make_node("Add", ["rd", "r1"], ["s"], name="skip"),
        helper.make_node("GlobalAveragePool", ["s"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1),
    ]
    return nets.make_model(nodes, [nets.tensor("x", ["N", 2, 8, 8])], [nets.tensor("logits", ["N", 5])], init)


NETS = {
    "cnn": lambda: nets.small_cnn(softmax=False),
    "cnn_nobias": lambda: nets.small_cnn(bias=False, softmax=False),
    "residual_dw": residual_depthwise,
}


class _Calibration(CalibrationDataReader):
    def __init__(self):
        self.batches = iter(
            [{"x": np.random.default_rng(i).standard_normal((1, 2, 8, 8)).astype(np.float32)} for i in range(16)]
        )

    def get_next(self):
        return next(self.batches, None)


_CACHE: dict = {}


def quantized(name: str, per_channel: bool, tmp_path_factory) -> onnx.ModelProto:
    key = (name, per_channel)
    if key not in _CACHE:
        folder = tmp_path_factory.mktemp("q")
        onnx.save(NETS[name](), folder / "float.onnx")
        quantize_static(
            str(folder / "float.onnx"),
            str(folder / "q.onnx"),
            _Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
        )
        _CACHE[key] = onnx.load(folder / "q.onnx")
    return _CACHE[key]


def dequantized_float(q: onnx.ModelProto) -> onnx.ModelProto:
    """The float model the QDQ model approximates: each weight DequantizeLinear replaced by its value
    (q − zp)·s, each activation QuantizeLinear → DequantizeLinear pair removed, or replaced by a Relu where it
    clips at 0 (zp = q_min: the quantizer drops a ReLU into the QuantizeLinear that follows it)."""
    import onnx_ir as ir

    model = ir.serde.deserialize_model(q)
    graph = model.graph
    for node in list(graph):
        if node.op_type != "DequantizeLinear":
            continue
        array = dequantized_constant(node.outputs[0])
        source = node.inputs[0].producer()
        if array is not None:
            value = ir.Value(
                name=node.outputs[0].name + "_float",
                shape=ir.Shape(array.shape),
                type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                const_value=ir.tensor(array),
            )
            graph.register_initializer(value)
        elif source is not None and source.op_type == "QuantizeLinear":
            value = source.inputs[0]
            zp = source.inputs[2].const_value.numpy() if len(source.inputs) > 2 else np.uint8(0)
            if zp == np.iinfo(zp.dtype).min:  # it clips at 0: the ReLU the quantizer dropped into it
                relu = ir.node("Relu", [value], name=source.name + "_relu")
                graph.insert_before(source, relu)
                value = relu.outputs[0]
        else:
            continue
        if value.type is None:
            value.type, value.shape = node.outputs[0].type, node.outputs[0].shape
        node.outputs[0].replace_all_uses_with(value, replace_graph_outputs=True)
    onnx_ir_passes = ir.passes.common
    onnx_ir_passes.RemoveUnusedNodesPass()(model)
    proto = ir.serde.serialize_model(model)
    del proto.graph.value_info[:]  # the quantizer's, some for values removed here
    assert {n.op_type for n in proto.graph.node}.isdisjoint({"QuantizeLinear", "DequantizeLinear"})
    return proto


def _x(seed=7, n=3):
    return np.random.default_rng(seed).standard_normal((n, 2, 8, 8)).astype(np.float32)


OPTIONS = {
    "epsilon": {"rule": "epsilon"},
    "zplus": {"rule": "zplus"},
    "composite": {},
    "gradient": {"method": "gradient"},
}


def _with_outputs(model: onnx.ModelProto, names) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.extend([helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names])
    return model


def _same_relu_pattern(q, f, x) -> np.ndarray:
    """Per sample: every pre-ReLU value has the same sign in the quantized and the float model, and both
    explain the same class."""
    pre = [n.input[0] for n in f.graph.node if n.op_type == "Relu"]
    a = session(_with_outputs(q, pre)).run(None, {"x": x})
    b = session(_with_outputs(f, pre)).run(None, {"x": x})
    same = a[0].argmax(1) == b[0].argmax(1)
    for u, v in zip(a[1:], b[1:]):
        same &= ((u > 0) == (v > 0)).reshape(len(x), -1).all(1)
    return same


# relevance on the float model with the dequantized weights, at samples of the same ReLU pattern: without
# MaxPool the gradient is the same product of weights and masks (exact); the LRP rules differ by the
# activation rounding inside z = W·x̂ (measured ≤ 0.055 for epsilon, ≤ 0.014 for zplus and the composite).
# With MaxPool, rounding makes ties and moves its argmax, so only the typical sample is close (median).
TOLERANCE = {"gradient": 1e-4, "epsilon": 0.1, "zplus": 0.03, "composite": 0.03}


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("name", ["cnn", "residual_dw"])
@pytest.mark.parametrize("how", sorted(OPTIONS))
def test_outputs_equal_the_quantized_model_and_relevance_the_dequantized_float(
    how, name, per_channel, tmp_path_factory
):
    q = quantized(name, per_channel, tmp_path_factory)
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and not ops & {"QLinearConv", "ConvInteger"}
    explained = lrpc.compile(q, **OPTIONS[how])
    kept = [n.op_type for n in explained.graph.node]
    assert kept.count("DequantizeLinear") >= sum(n.op_type == "DequantizeLinear" for n in q.graph.node)
    x = _x(n=64)
    deployed = session(q).run(None, {"x": x})[0]
    out = run(session(explained), x)
    np.testing.assert_array_equal(out[q.graph.output[0].name], deployed)
    assert np.abs(out["relevance"]).sum() > 0

    f = dequantized_float(q)
    float_out = run(session(lrpc.compile(f, **OPTIONS[how])), x)
    same = _same_relu_pattern(q, f, x)
    assert same.sum() >= 2, "too few samples keep their ReLU pattern under quantization"
    err = rel_err_per_sample(out["relevance"][same], float_out["relevance"][same])
    if name == "cnn":  # MaxPool
        assert np.median(err) <= 0.15, err
    else:
        assert err.max() <= TOLERANCE[how], err


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_rule_zero_conserves_relevance_through_the_quantizers(per_channel, tmp_path_factory):
    q = quantized("cnn_nobias", per_channel, tmp_path_factory)
    x = _x(seed=11, n=4)
    logits = session(q).run(None, {"x": x})[0]
    relevance = run(session(lrpc.compile(q, rule="zero")), x)["relevance"]
    explained = logits[np.arange(len(x)), logits.argmax(1)]
    np.testing.assert_allclose(relevance.reshape(len(x), -1).astype(np.float64).sum(1), explained, rtol=1e-4)


def test_dequantized_constant_per_axis():
    import onnx_ir as ir

    qv = np.array([[1, -2], [3, 4], [-5, 6]], np.int8)
    scale, zp = np.array([0.5, 2.0], np.float32), np.array([1, -1], np.int8)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], axis=1)
    graph = helper.make_graph(
        [node],
        "g",
        [],
        [nets.tensor("w", [3, 2])],
        [numpy_helper.from_array(a, n) for n, a in (("q", qv), ("s", scale), ("z", zp))],
    )
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    got = dequantized_constant(model.graph.outputs[0])
    np.testing.assert_array_equal(got, (qv.astype(np.float32) - zp) * scale)
    assert got.dtype == np.float32


def _qoperator_model() -> onnx.ModelProto:
    init = {
        "xs": np.float32(0.1),
        "xz": np.uint8(128),
        "w": np.ones((2, 2, 1, 1), np.int8),
        "ws": np.float32(0.05),
        "wz": np.int8(0),
        "ys": np.float32(0.2),
        "yz": np.uint8(128),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant_x"),
        helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"], name="qconv"),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dequant_y"),
    ]
    return nets.make_model(nodes, [nets.tensor("x", ["N", 2, 4, 4])], [nets.tensor("y", ["N", 2, 4, 4])], init)


def test_a_qoperator_file_exits_2_naming_the_node(tmp_path):
    onnx.save(_qoperator_model(), tmp_path / "m.onnx")
    done = subprocess.run(
        [str(LRPC), "compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "qconv" in done.stderr and "QLinearConv" in done.stderr and "QuantFormat.QDQ" in done.stderr, done.stderr
    assert not (tmp_path / "out.onnx").exists()


def _matmul_add(seed=0) -> onnx.ModelProto:
    """MatMul-Add-Relu-MatMul-Add on [N, 8]: quantize_static writes each bias as DequantizeLinear(int8 q)."""
    rng = np.random.default_rng(seed)
    init = {
        "w1": rng.standard_normal((8, 6)).astype(np.float32),
        "b1": rng.standard_normal(6).astype(np.float32),
        "w2": rng.standard_normal((6, 3)).astype(np.float32),
        "b2": rng.standard_normal(3).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["m2", "b2"], ["logits"], name="add2"),
    ]
    return nets.make_model(nodes, [nets.tensor("x", ["N", 8])], [nets.tensor("logits", ["N", 3])], init)


class _FlatCalibration(_Calibration):
    def __init__(self):
        self.batches = iter(
            [{"x": np.random.default_rng(i).standard_normal((1, 8)).astype(np.float32)} for i in range(16)]
        )


def test_a_quantized_bias_add_is_a_bias_not_a_join(tmp_path):
    """Add(MatMul, DequantizeLinear(q_b)) adds a constant: relevance stays with the unit (R_x = R_y, as for a
    float Add by a constant), none flows into the bias's quantizer; so rule zero gives Σ R_in = the logit."""
    onnx.save(_matmul_add(), tmp_path / "float.onnx")
    quantize_static(
        str(tmp_path / "float.onnx"), str(tmp_path / "q.onnx"), _FlatCalibration(), quant_format=QuantFormat.QDQ
    )
    q = onnx.load(tmp_path / "q.onnx")
    adds = [n for n in q.graph.node if n.op_type == "Add"]
    assert adds and all(dequantized_constant_of(q, n.input[1]) for n in adds)
    x = np.random.default_rng(6).standard_normal((4, 8)).astype(np.float32)
    logits = session(q).run(None, {"x": x})[0]
    out = run(session(lrpc.compile(q, rule="zero")), x)
    np.testing.assert_array_equal(out["logits"], logits)
    np.testing.assert_allclose(out["relevance"].astype(np.float64).sum(1), logits.max(1), rtol=1e-4)


def dequantized_constant_of(model: onnx.ModelProto, name: str) -> bool:
    import onnx_ir as ir

    graph = ir.serde.deserialize_model(model).graph
    value = next(v for n in graph for v in n.outputs if v.name == name)
    return dequantized_constant(value) is not None


def test_inspect_names_the_quantized_weights_and_refuses_nothing(tmp_path, tmp_path_factory):
    onnx.save(quantized("cnn", True, tmp_path_factory), tmp_path / "q.onnx")
    done = subprocess.run([str(LRPC), "inspect", str(tmp_path / "q.onnx")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    weights = [line for line in done.stdout.splitlines() if line.strip().startswith(("w1_Dequantize", "b1_Dequant"))]
    assert len(weights) == 2 and all("quantized constant" in line for line in weights), done.stdout
    assert "REFUSED" not in done.stdout


def conv_stack(channels=16, seed=0) -> onnx.ModelProto:
    """Conv-Relu, Conv-Relu (channels wide), GlobalAveragePool, Flatten, Gemm on [N, 2, 8, 8]: wide enough that
    onnxruntime's integer kernels (QLinearConv) round some values one step away from the float math."""
    rng = np.random.default_rng(seed)
    he = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)
    init = {}
    for w, b, shape in (
        ("w1", "b1", (channels, 2, 3, 3)),
        ("w2", "b2", (channels, channels, 3, 3)),
        ("w3", "b3", (5, channels)),
    ):
        init[w], init[b] = he(*shape), rng.normal(0, 0.1, shape[0]).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1),
    ]
    return nets.make_model(nodes, [nets.tensor("x", ["N", 2, 8, 8])], [nets.tensor("logits", ["N", 5])], init)


NETS["conv_stack"] = conv_stack


def test_a_qoperator_file_of_microsoft_ops_is_refused_as_qoperator(tmp_path):
    """quantize_static's QOperator format writes QLinearAdd, QGemm, … in com.microsoft: the refusal says
    QOperator and how to quantize instead, not merely "custom operator domains"."""
    onnx.save(_matmul_add(), tmp_path / "float.onnx")
    quantize_static(
        str(tmp_path / "float.onnx"), str(tmp_path / "q.onnx"), _FlatCalibration(), quant_format=QuantFormat.QOperator
    )
    q = onnx.load(tmp_path / "q.onnx")
    assert any(n.domain == "com.microsoft" for n in q.graph.node)
    with pytest.raises(lrpc.LrpcError, match=r"QOperator-format quantized op .*QuantFormat\.QDQ"):
        lrpc.compile(q)
