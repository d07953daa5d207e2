"""The torch-built models in models/: ResNets, the small U-Net and the two-output autoencoder.

Each exports with torch.onnx (opset 17, dynamic batch) into tmp_path, passes the full checker, and
onnxruntime reproduces torch's forward at batch 1 and 3 (rtol 1e-4, atol 1e-5).
"""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import autoencoder  # noqa: E402  (models/ is on sys.path, see tests/conftest.py)
import resnet  # noqa: E402
import unet  # noqa: E402


def _export_and_check(save, model, path, **kwargs):
    save(model, path, **kwargs)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    return proto


def _assert_matches_torch(model, path, outputs):
    """onnxruntime == torch at batch 1 and 3; returns the last (inputs, onnxruntime results)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == outputs
    for batch in (1, 3):
        x = torch.randn((batch, *model.in_shape), generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = model(x)
        want = [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]
        got = sess.run(None, {"input": x.numpy()})
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    return x.numpy(), got


def _ops(proto):
    return Counter(n.op_type for n in proto.graph.node)


# ---------------------------------------------------------------- ResNet


def test_tiny_resnet_keeps_batchnorm_and_matches_torch(tmp_path):
    model = resnet.tiny_resnet(seed=0)
    proto = _export_and_check(resnet.save, model, tmp_path / "tiny.onnx")
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert n_bn == 1 + 3 * 2 + 2  # stem, two per block, two projection shortcuts
    ops = _ops(proto)
    assert ops["BatchNormalization"] == n_bn and ops["Conv"] == n_bn
    assert ops["Add"] == 3 and ops["MaxPool"] == 1 and ops["GlobalAveragePool"] == 1
    assert ops["Gemm"] == 1
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    assert {a.name: a.i for a in bn.attribute if a.name == "training_mode"} == {"training_mode": 0}
    _assert_matches_torch(model, tmp_path / "tiny.onnx", ["logits"])


def test_tiny_resnet_fused_export_has_no_batchnorm(tmp_path):
    model = resnet.tiny_resnet(seed=0)
    proto = _export_and_check(resnet.save, model, tmp_path / "fused.onnx", fuse_bn=True)
    assert "BatchNormalization" not in _ops(proto)
    _assert_matches_torch(model, tmp_path / "fused.onnx", ["logits"])


def test_resnet_batchnorm_statistics_are_seeded_and_non_trivial():
    model = resnet.tiny_resnet(seed=0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean.abs().min() > 0 and (m.running_var - 1).abs().max() > 0.05
            assert (m.weight - 1).abs().max() > 0.05 and m.bias.abs().max() > 0
    same, other = resnet.tiny_resnet(seed=0).state_dict(), resnet.tiny_resnet(seed=1).state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, same[name]), name
    assert not torch.equal(model.fc.weight, other["fc.weight"])


def test_resnet_static_batch_export(tmp_path):
    model = resnet.tiny_resnet(seed=2)
    resnet.save(model, tmp_path / "static.onnx", dynamic_batch=False)
    dim = onnx.load(str(tmp_path / "static.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 1


def test_resnet18_matches_torch(tmp_path):
    model = resnet.resnet18(seed=0)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # as torchvision's
    proto = _export_and_check(resnet.save, model, tmp_path / "resnet18.onnx")
    ops = _ops(proto)
    assert ops["Conv"] == ops["BatchNormalization"] == 20 and ops["Add"] == 8
    _assert_matches_torch(model, tmp_path / "resnet18.onnx", ["logits"])


@pytest.mark.slow
def test_resnet50_matches_torch(tmp_path):
    model = resnet.resnet50(seed=0)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # as torchvision's
    proto = _export_and_check(resnet.save, model, tmp_path / "resnet50.onnx")
    ops = _ops(proto)
    assert ops["Conv"] == ops["BatchNormalization"] == 53 and ops["Add"] == 16
    assert ops["MaxPool"] == 1 and ops["GlobalAveragePool"] == 1
    x, (logits,) = _assert_matches_torch(model, tmp_path / "resnet50.onnx", ["logits"])
    assert logits.shape == (3, 1000) and 0.3 < logits.std() < 10


def test_resnet_cli(tmp_path, capsys):
    resnet.main(["tiny", "-o", str(tmp_path / "cli.onnx"), "--seed", "3"])
    assert "19,954 parameters" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(tmp_path / "cli.onnx")), full_check=True)


# ---------------------------------------------------------------- U-Net


def test_small_unet_matches_torch(tmp_path):
    model = unet.small_unet(seed=0)
    proto = _export_and_check(unet.save, model, tmp_path / "unet.onnx")
    ops = _ops(proto)
    assert ops["ConvTranspose"] == 1 and ops["Resize"] == 1 and ops["Concat"] == 2
    assert ops["MaxPool"] == 2 and ops["Conv"] == 12
    resize = next(n for n in proto.graph.node if n.op_type == "Resize")
    assert {a.name: a.s for a in resize.attribute if a.name == "mode"} == {"mode": b"nearest"}
    # Each Concat joins an encoder activation (the skip) with an upsampled decoder value.
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    concats = [n for n in proto.graph.node if n.op_type == "Concat"]
    assert [[producers[i] for i in n.input] for n in concats] == [["Relu", "ConvTranspose"], ["Relu", "Conv"]]
    x, (logits,) = _assert_matches_torch(model, tmp_path / "unet.onnx", ["logits"])
    assert logits.shape == (3, 2, 32, 32)


def test_small_unet_other_sizes_and_cli(tmp_path):
    model = unet.small_unet(seed=1, in_channels=1, classes=3, size=16)
    _export_and_check(unet.save, model, tmp_path / "u16.onnx")
    _, (logits,) = _assert_matches_torch(model, tmp_path / "u16.onnx", ["logits"])
    assert logits.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="divisible by 4"):
        unet.small_unet(size=30)
    unet.main(["-o", str(tmp_path / "cli.onnx")])
    onnx.checker.check_model(onnx.load(str(tmp_path / "cli.onnx")))


# ---------------------------------------------------------------- autoencoder


def _with_latent_output(proto):
    out = onnx.helper.make_tensor_value_info(autoencoder.LATENT, onnx.TensorProto.FLOAT, None)
    proto.graph.output.append(out)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def test_autoencoder_two_outputs_and_named_latent(tmp_path):
    model = autoencoder.autoencoder(seed=0)
    path = tmp_path / "ae.onnx"
    proto = _export_and_check(autoencoder.save, model, path)
    ops = _ops(proto)
    assert ops["Conv"] == 2 and ops["ConvTranspose"] == 3 and ops["Gemm"] == 3
    assert ops["Selu"] == 6 and ops["Tanh"] == 1 and ops["Reshape"] == 2
    assert "Dropout" not in ops
    shapes = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert shapes == {"class_logits": ["batch", 2], "reconstruction": ["batch", 1, 16, 16]}
    # The latent: one SELU's output, read by the class head and the decoder's first Linear.
    (producer,) = [n for n in proto.graph.node if "latent" in n.output]
    assert producer.op_type == "Selu" and producer.name == "/latent_act/Selu"
    readers = sorted(n.name for n in proto.graph.node if "latent" in n.input)
    assert readers == ["/classify/Gemm", "/dense2/Gemm"]
    assert not [n for n in proto.graph.node if autoencoder.LATENT_RAW_NAME in n.input]

    x, (logits, rec) = _assert_matches_torch(model, path, ["class_logits", "reconstruction"])
    assert np.abs(rec).max() <= 1.0
    (z,) = _with_latent_output(proto).run([autoencoder.LATENT], {"input": x})
    with torch.no_grad():
        want = model.encode(torch.from_numpy(x)).numpy()
    assert z.shape == (3, 64)
    np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-5)


def test_autoencoder_decoding_from_logits(tmp_path):
    model = autoencoder.autoencoder(seed=1, width=8, decode_from="logits")
    proto = _export_and_check(autoencoder.save, model, tmp_path / "ae8.onnx")
    (dense2,) = [n for n in proto.graph.node if n.name == "/dense2/Gemm"]
    assert dense2.input[0] == "class_logits"
    _, (_, rec) = _assert_matches_torch(model, tmp_path / "ae8.onnx", ["class_logits", "reconstruction"])
    assert rec.shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="decode_from"):
        autoencoder.autoencoder(decode_from="softmax")


@pytest.mark.slow  # 90 s: a training run
def test_autoencoder_synthetic_data_and_brief_training(tmp_path):
    x, y = autoencoder.synthetic_data(64, width=16)
    assert x.shape == (64, 1, 16, 16) and x.dtype == np.float32 and set(y) == {0, 1}
    np.testing.assert_allclose(x, x.transpose(0, 1, 3, 2), atol=1e-6)
    np.testing.assert_allclose(x[:, 0, range(16), range(16)], 1.0, rtol=1e-5)
    model = autoencoder.autoencoder(seed=0)
    acc, mse = autoencoder.train_synthetic(model, epochs=10)
    assert acc >= 0.9 and mse < 0.1
    assert not model.training
    autoencoder.main(["-o", str(tmp_path / "cli.onnx")])
    onnx.checker.check_model(onnx.load(str(tmp_path / "cli.onnx")))
