"""Models from torch.onnx (legacy and dynamo exporters), external weights, shape chains, Dropout."""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import lrpc

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


class Net(torch.nn.Module):
    """Conv → ReLU → MaxPool → x.view(x.size(0), -1) → Dropout → Linear on [N, T, k] → ReLU → Linear."""

    def __init__(self, bias=True):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=bias)
        self.drop = torch.nn.Dropout(0.5)
        self.seq = torch.nn.Linear(8, 6, bias=bias)  # applied to [N, 8, 8]: MatMul + Add when exported
        self.head = torch.nn.Linear(48, 3, bias=bias)

    def logits(self, x):
        y = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)  # [N, 4, 4, 4]
        y = self.drop(y.view(y.size(0), -1)).view(y.size(0), 8, 8)  # shape chains
        y = torch.relu(self.seq(y)).reshape(y.size(0), -1)  # [N, 48]
        return self.head(y)

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


def export(tmp_path, dynamo, bias=True, name="net.onnx", **kwargs):
    torch.manual_seed(0)
    net = Net(bias).eval()
    path = tmp_path / name
    x = torch.randn(2, 1, 8, 8)
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(
            net,
            (x,),
            str(path),
            dynamo=True,
            input_names=["x"],
            output_names=["p"],
            dynamic_shapes={"x": {0: batch}},
            **kwargs,
        )
    else:
        torch.onnx.export(
            net,
            (x,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["p"],
            dynamic_axes={"x": {0: "batch"}, "p": {0: "batch"}},
            **kwargs,
        )
    return net, path


def run(proto, x):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


X = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)


def test_legacy_and_dynamo_exports_give_the_same_relevance(tmp_path):
    net, legacy = export(tmp_path, dynamo=False)
    _, dynamo = export(tmp_path, dynamo=True, name="dynamo.onnx")
    results = [run(lrpc.compile(str(p), rule="alpha2beta1"), X) for p in (legacy, dynamo)]
    expected = net(torch.from_numpy(X)).detach().numpy()
    for probs, rel in results:
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
        assert rel.shape == X.shape
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-6 * np.abs(results[0][1]).max())


def test_shape_chains_fold_and_matmul_add_becomes_an_affine_layer(tmp_path):
    _, path = export(tmp_path, dynamo=False)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Shape", "Gather", "MatMul"} <= ops  # what the exporter wrote
    lines = []
    proto = lrpc.compile(str(path), rule="epsilon", log=lines.append)
    assert "FoldConstants" in lines and any(line.startswith("MatMulAddToGemm: ") for line in lines)
    forward = [n.op_type for n in proto.graph.node if not n.name.startswith("lrp/")]
    assert "Gather" not in forward and "Dropout" not in forward
    # the head is a Gemm; the Linear on [N, 8, 8] is one for the rule and runs as the exporter wrote it
    assert forward.count("Gemm") == 1 and forward.count("MatMul") == 1


@pytest.mark.parametrize("dynamo", [False, True])
def test_conservation_on_a_bias_free_export(tmp_path, dynamo):
    """LRP-0 on a bias-free ReLU net: each sample's relevance sums to its explained logit."""
    net, path = export(tmp_path, dynamo=dynamo, bias=False)
    proto = lrpc.compile(str(path), rule="zero")
    _, rel = run(proto, X)
    with torch.no_grad():
        top = net.logits(torch.from_numpy(X)).max(1).values.numpy()
    np.testing.assert_allclose(rel.sum(axis=(1, 2, 3)), top, rtol=1e-5)


def test_external_weights(tmp_path):
    _, path = export(tmp_path, dynamo=False)
    model = onnx.load(path)
    external = tmp_path / "ext.onnx"
    onnx.save_model(model, external, save_as_external_data=True, location="ext.weights", size_threshold=0)
    assert (tmp_path / "ext.weights").exists()
    np.testing.assert_allclose(run(lrpc.compile(str(external)), X)[1], run(lrpc.compile(str(path)), X)[1])


def test_same_padding_from_shapes_folds_round_by_round(tmp_path):
    """timm's Conv2dSame (TensorFlow 'same' padding computed from x's shape before each strided conv, as in
    the tf_ EfficientNets): with a dynamic batch the pads are shape chains of the static dims; folded, shape
    inference gives the next conv's input a static size, whose pads then fold. The relevance equals a
    static-shape export's."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from torchvision_stub import stub_torchvision

    stub_torchvision()
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        layers.Conv2dSame(1, 4, 3, stride=2),
        torch.nn.ReLU(),
        layers.Conv2dSame(4, 4, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 3),
    ).eval()
    x = torch.randn(2, 1, 13, 13)
    dynamic, static = tmp_path / "dynamic.onnx", tmp_path / "static.onnx"
    torch.onnx.export(
        net, (x,), str(dynamic), dynamo=False, opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
    )
    torch.onnx.export(net, (x,), str(static), dynamo=False, opset_version=17, input_names=["x"])
    feed = {"x": x.numpy()}
    got = ort.InferenceSession(lrpc.compile(dynamic, rule="epsilon").SerializeToString()).run(None, feed)
    want = ort.InferenceSession(lrpc.compile(static, rule="epsilon").SerializeToString()).run(None, feed)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)
