"""VGG-style ONNX models with seeded random weights, built with onnx.helper + numpy.

No torch needed. The graphs look like what torch exports for a VGG: 3x3 Conv
(pad 1) + Relu blocks with 2x2 MaxPools, Flatten, Gemm (transB=1, weight
[out, in]) + Relu hidden layers and a final Gemm to the logits. Opset 17, IR
version 8 (onnxruntime 1.31 rejects the IR version onnx 1.23 writes by default).

Weights are He-normal (std sqrt(2 / fan_in)) from ``np.random.default_rng(seed)``;
biases come from a second generator, so ``bias=False`` gives the same weights.

    python models/vgg.py small -o small_vgg.onnx [--seed N] [--no-bias]
    python models/vgg.py vgg16 -o vgg16.onnx     # ~138M parameters, external data
"""

import argparse
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.external_data_helper import load_external_data_for_model, set_external_data

OPSET = 17
IR_VERSION = 8
EXTERNAL_DATA_THRESHOLD = 100 * 1024 * 1024  # bytes; larger models save weights beside

SMALL_CONFIG = [16, 16, "M", 32, 32, "M", 64, "M"]
VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class _Builder:
    """Writes nodes and weights straight into a ModelProto (no copies of big tensors)."""

    def __init__(self, seed, bias):
        self.w_rng = np.random.default_rng(seed)
        self.b_rng = np.random.default_rng([seed, 1]) if bias else None
        self.model = onnx.ModelProto()
        self.graph = self.model.graph

    def _tensor(self, name, array):
        t = self.graph.initializer.add()
        t.name, t.data_type = name, TensorProto.FLOAT
        t.dims.extend(array.shape)
        t.raw_data = array.tobytes()  # little-endian float32 on every supported host

    def param(self, name, shape, fan_in):
        """Add ``name.weight`` (He-normal) and, with biases on, ``name.bias``."""
        w = self.w_rng.standard_normal(shape, dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_in))
        self._tensor(name + ".weight", w)
        if self.b_rng is None:
            return [name + ".weight"]
        b = self.b_rng.standard_normal(shape[0], dtype=np.float32) * np.float32(0.01)
        self._tensor(name + ".bias", b)
        return [name + ".weight", name + ".bias"]

    def node(self, op, name, inputs, output=None, **attrs):
        """Add a node; its output value is named after the node unless given."""
        output = output or name
        self.graph.node.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output


def vgg(config, in_shape=(3, 32, 32), classes=10, hidden=(64,), seed=0, bias=True, softmax=False):
    """A VGG-style classifier; ints in ``config`` are conv widths, "M" a 2x2 max pool."""
    b = _Builder(seed, bias)
    channels, height, width = in_shape
    x = "input"
    block, index = 1, 0
    for item in config:
        if item == "M":
            x = b.node("MaxPool", f"pool{block}", [x], kernel_shape=[2, 2], strides=[2, 2])
            height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise ValueError(f"too many pools for input {in_shape}")
            block, index = block + 1, 0
            continue
        index += 1
        name = f"conv{block}_{index}"
        inputs = [x] + b.param(name, (int(item), channels, 3, 3), channels * 9)
        x = b.node("Conv", name, inputs, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        x = b.node("Relu", f"relu{block}_{index}", [x])
        channels = int(item)

    x = b.node("Flatten", "flatten", [x], axis=1)
    features = channels * height * width
    widths = list(hidden) + [classes]
    for k, out in enumerate(widths, start=1):
        name = f"fc{k}"
        last = k == len(widths)
        output = "logits" if last and not softmax else None
        x = b.node("Gemm", name, [x] + b.param(name, (out, features), features), output=output, transB=1)
        if not last:
            x = b.node("Relu", f"relu_fc{k}", [x])
        features = out
    if softmax:
        x = b.node("Softmax", "softmax", [x], output="probs", axis=1)

    b.graph.name = "vgg"
    b.graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *in_shape]))
    b.graph.output.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", classes]))
    model = b.model
    model.ir_version = IR_VERSION
    model.producer_name = "lrpc-models"
    model.opset_import.append(helper.make_opsetid("", OPSET))
    return model


def small_vgg(seed=0, bias=True):
    """Eight-layer toy VGG on 3x32x32 with 10 classes (~0.1M parameters)."""
    return vgg(SMALL_CONFIG, (3, 32, 32), classes=10, hidden=(64,), seed=seed, bias=bias)


def vgg16(seed=0, bias=True):
    """VGG-16 (configuration D) on 3x224x224 with 1000 classes (~138M parameters)."""
    return vgg(VGG16_CONFIG, (3, 224, 224), classes=1000, hidden=(4096, 4096), seed=seed, bias=bias)


def save(model, path):
    """Write ``model`` to ``path``; above 100 MB the weights go to ``<name>.data`` beside it.

    ``model`` is left as it was (weights back in memory) after an external save.
    The tensors are marked by hand rather than with ``save_as_external_data=True``,
    whose stale-file check in onnx 1.23 looks for ``location`` in the working
    directory instead of beside ``path``.
    """
    path = Path(path)
    if model.ByteSize() <= EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path))
        return
    data = path.with_name(path.name + ".data")
    if data.exists():
        os.remove(data)  # onnx appends to an existing data file
    for tensor in model.graph.initializer:
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= 1024:
            set_external_data(tensor, data.name)
    onnx.save_model(model, str(path))  # writes the marked tensors to ``data``
    load_external_data_for_model(model, str(path.parent))


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write a seeded random VGG-style ONNX model.")
    ap.add_argument("arch", choices=["small", "vgg16"])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bias", action="store_true")
    args = ap.parse_args(argv)
    build = small_vgg if args.arch == "small" else vgg16
    model = build(seed=args.seed, bias=not args.no_bias)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    save(model, args.output)
    print(f"wrote {args.output}: {args.arch}, {params:,} parameters")


if __name__ == "__main__":
    main()
