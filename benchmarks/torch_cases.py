"""The torch models of the Zennit comparison, each with Zennit's view of it and its inputs.

A `Case` holds the torch model that is exported to ONNX (`export`), the module Zennit explains
(`view`: the same weights, returning the explained logits), seeded inputs and the zᴮ bounds:

* digits_cnn: models/digits_cnn.py with its trained weights (from models/digits_cnn.onnx), held-out digits.
* small_vgg, vgg16_32x32, vgg16: models/vgg.py's seeded VGGs as nn.Sequential (the 8-layer toy on
  32x32; the VGG-16 layout — 13 convs, 3 fully connected — on 32x32 with fc width 512; VGG-16 itself
  on 224x224). Inputs U[0, 1].
* tiny_resnet_bn, resnet18_bn: models/resnet.py with BatchNorm (exported as BatchNormalization nodes).
  Zennit's view replaces global average pooling by the depthwise conv with weights 1/k that lrpc
  canonizes it to, so the rule applies to it on both sides. Inputs U[0, 1].
* autoencoder: models/autoencoder.py, class logits explained; Zennit's view uses nn.SELU modules
  where the model calls F.selu (Zennit hooks modules only) and leaves out the eval-mode dropouts.
"""

from __future__ import annotations

import copy
import io
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "models") not in sys.path:
    sys.path.insert(0, str(ROOT / "models"))

import autoencoder  # noqa: E402  (models/)
import digits_cnn  # noqa: E402
import resnet  # noqa: E402
import vgg  # noqa: E402


class GlobalMean(nn.Conv2d):
    """A depthwise conv with weights 1/(h·w) and no bias: global average pooling as lrpc canonizes it
    (its own class, so that a composite can give it the rule Zennit gives average pools)."""

    def __init__(self, channels, size):
        super().__init__(channels, channels, size, groups=channels, bias=False)
        with torch.no_grad():
            self.weight.fill_(1.0 / (size[0] * size[1]))


class _AutoencoderClassView(nn.Module):
    """The autoencoder's class head with module activations (Zennit hooks modules, not F.selu)."""

    def __init__(self, ae):
        super().__init__()
        self.conv1, self.act1 = ae.conv1, nn.SELU()
        self.conv2, self.act2 = ae.conv2, nn.SELU()
        self.dense1, self.act3 = ae.dense1, nn.SELU()
        self.classify, self.code = ae.classify, ae.code

    def forward(self, x):
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.classify(self.act3(self.dense1(h.reshape(-1, self.code))))


@dataclass
class Case:
    """A torch model (`export` goes to ONNX), Zennit's view of it (`view` returns the logits), inputs."""

    name: str
    export: nn.Module
    view: nn.Module
    inputs: object  # batch -> float32 array
    low: float = 0.0
    high: float = 1.0
    resnet: bool = False  # BatchNorm to merge and residual sums (models/resnet.py blocks)
    output_names: list = field(default_factory=lambda: ["logits"])

    def onnx_model(self) -> onnx.ModelProto:
        buf = io.BytesIO()
        axes = {n: {0: "batch"} for n in ["input", *self.output_names]}
        shape = tuple(self.inputs(1).shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # PRESERVE keeps BatchNormalization nodes in the file (eval-mode BN; lrpc folds them).
            torch.onnx.export(
                self.export.eval(),
                (torch.zeros(shape),),
                buf,
                dynamo=False,
                opset_version=17,
                training=torch.onnx.TrainingMode.PRESERVE,
                input_names=["input"],
                output_names=self.output_names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        return onnx.load_from_string(buf.getvalue())


def _uniform(shape, seed=0):
    return lambda n: np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape)).astype(np.float32)


def _load_onnx_weights(module, proto):
    state = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    module.load_state_dict(state)
    return module.eval()


def digits():
    """The bundled digits CNN (trained weights from models/digits_cnn.onnx) on held-out digits."""
    model = _load_onnx_weights(digits_cnn.build_model(), onnx.load(str(ROOT / "models" / "digits_cnn.onnx")))
    x = np.load(ROOT / "models" / "digits_test.npz")["x"]
    return Case("digits_cnn", model, model[:-1], lambda n: x[:n], output_names=["probs"])


def _torch_vgg(config, in_shape, classes, hidden, seed=0):
    """The VGG of models/vgg.py as an nn.Sequential, with models/vgg.py's seeded weights."""
    proto = vgg.vgg(config, in_shape, classes=classes, hidden=hidden, seed=seed)
    layers, names, channels, side = [], [], in_shape[0], in_shape[1]
    block, index = 1, 0
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            block, index, side = block + 1, 0, side // 2
            continue
        index += 1
        layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
        names.append(f"conv{block}_{index}")
        channels = item
    layers.append(nn.Flatten())
    features = channels * side * side
    for k, out in enumerate([*hidden, classes], start=1):
        layers.append(nn.Linear(features, out))
        names.append(f"fc{k}")
        if k <= len(hidden):
            layers.append(nn.ReLU())
        features = out
    model = nn.Sequential(*layers)
    params = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    with torch.no_grad():
        for m, name in zip(params, names, strict=True):
            m.weight.copy_(torch.from_numpy(init[name + ".weight"].copy()))
            m.bias.copy_(torch.from_numpy(init[name + ".bias"].copy()))
    return model.eval()


def small_vgg():
    model = _torch_vgg(vgg.SMALL_CONFIG, (3, 32, 32), 10, (64,))
    return Case("small_vgg", model, model, _uniform((3, 32, 32)))


def vgg16_32():
    """The VGG-16 layout (13 convs, 3 fully connected) on 3x32x32, fc widths 512, 10 classes."""
    model = _torch_vgg(vgg.VGG16_CONFIG, (3, 32, 32), 10, (512, 512))
    return Case("vgg16_32x32", model, model, _uniform((3, 32, 32)))


def vgg16_full():
    model = _torch_vgg(vgg.VGG16_CONFIG, (3, 224, 224), 1000, (4096, 4096))
    return Case("vgg16", model, model, _uniform((3, 224, 224)))


def _resnet_case(name, model):
    view = copy.deepcopy(model)
    with torch.no_grad():
        channels = model.fc.in_features
        final = view.blocks(view.stem(torch.zeros(1, *model.in_shape))).shape[-2:]
        view.pool = GlobalMean(channels, tuple(final))
    return Case(name, model, view.eval(), _uniform(model.in_shape), resnet=True)


def tiny_resnet():
    return _resnet_case("tiny_resnet_bn", resnet.tiny_resnet(seed=0))


def resnet18():
    return _resnet_case("resnet18_bn", resnet.resnet18(seed=0))


def connectome_autoencoder():
    ae = autoencoder.autoencoder(seed=0)
    x = autoencoder.synthetic_data(8, seed=0)[0]
    return Case(
        "autoencoder",
        ae,
        _AutoencoderClassView(ae).eval(),
        lambda n: x[:n],
        low=-1.0,
        high=1.0,
        output_names=list(autoencoder.OUTPUTS),
    )


CASES = {
    "digits_cnn": digits,
    "small_vgg": small_vgg,
    "vgg16_32x32": vgg16_32,
    "tiny_resnet_bn": tiny_resnet,
    "autoencoder": connectome_autoencoder,
    "vgg16": vgg16_full,
    "resnet18_bn": resnet18,
}
