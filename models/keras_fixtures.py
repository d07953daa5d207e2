"""Small seeded Keras 3 models converted to ONNX by tf2onnx: fixtures for the canonization passes.

Run with the TensorFlow environment, never the project's own:

    bash scripts/keras_env.sh
    .venv-keras/bin/python models/keras_fixtures.py [--out-dir tests/fixtures/keras]

Every weight is drawn from ``np.random.default_rng`` and set with ``layer.set_weights`` (Keras'
own initializers are not used), so a rerun gives the same weights. BatchNormalization layers get
non-trivial gamma, beta, moving mean and moving variance: folding them wrongly changes the output.
Inputs are channels-last, as Keras has them. For each model NAME this writes

* ``NAME.onnx``: tf2onnx ``convert.from_keras``, opset 17, IR version 8, input ``input``
  [batch, ...] (batch dynamic), one output named after the last layer (``logits`` or ``probs``);
* ``NAME.npz``: ``x`` float32 [4, ...] seeded inputs, ``y`` Keras' own inference forward on them,
  and each BatchNormalization layer's ``LAYER.gamma``, ``.beta``, ``.moving_mean``,
  ``.moving_variance`` (Keras epsilon 1e-3), to check a BN fold against the source parameters.

``cnn_avgpool_bn`` is also written by Keras 3's ``model.export(path, format="onnx")``, which with the
TensorFlow backend calls tf2onnx ``convert.from_function`` on the model's traced call; it needs no
network. It is saved as ``cnn_avgpool_bn_export.onnx`` next to the ``from_keras`` file.
"""

import argparse
import os
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # plain kernels: stable float round-off

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from keras import layers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "tests" / "fixtures" / "keras"
OPSET = 17
IR_VERSION = 8
N_SAMPLES = 4


def cnn_avgpool_bn(softmax=False):
    """Conv/BN/ReLU with AveragePooling 'same' on an even (16→8) and an odd (7→4) map, GAP, Dense."""
    inp = keras.Input((16, 16, 3), name="input")
    x = layers.Conv2D(8, 3, padding="same", use_bias=True, name="conv1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.AveragePooling2D(2, padding="same", name="pool1")(x)  # 16 -> 8
    x = layers.Conv2D(8, 2, padding="valid", name="conv2")(x)  # 8 -> 7
    x = layers.ReLU(name="relu2")(x)
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="pool2")(x)  # 7 -> 4, pads 1/1
    x = layers.Conv2D(8, 3, name="conv3")(x)  # 4 -> 2
    x = layers.ReLU(name="relu3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if softmax:
        out = layers.Dense(10, activation="softmax", name="probs")(x)
    else:
        out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="cnn_avgpool_bn_softmax" if softmax else "cnn_avgpool_bn")


def dense_bn():
    """Dense → BatchNormalization → ReLU → Dense on flat features."""
    inp = keras.Input((20,), name="input")
    x = layers.Dense(16, name="fc1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    out = layers.Dense(5, name="logits")(x)
    return keras.Model(inp, out, name="dense_bn")


def bn_first():
    """BatchNormalization straight on the input (nothing before it to fold into), Conv, Flatten, Dense."""
    inp = keras.Input((8, 8, 2), name="input")
    x = layers.BatchNormalization(name="bn0")(inp)
    x = layers.Conv2D(4, 3, name="conv1")(x)  # 8 -> 6
    x = layers.ReLU(name="relu1")(x)
    x = layers.Flatten(name="flatten")(x)  # NHWC order
    out = layers.Dense(3, name="logits")(x)
    return keras.Model(inp, out, name="bn_first")


def avgpool_same_odd():
    """'same' average pools with asymmetric (7→4, pad at the end only) and stride-1 padding."""
    inp = keras.Input((7, 7, 2), name="input")
    x = layers.AveragePooling2D(2, padding="same", name="pool1")(inp)  # 7 -> 4
    x = layers.AveragePooling2D(3, strides=1, padding="same", name="pool2")(x)  # 4 -> 4
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(3, name="logits")(x)
    return keras.Model(inp, out, name="avgpool_same_odd")


def set_seeded_weights(model, seed):
    """He-normal kernels, small biases, and BN statistics far from (1, 0, 0, 1); all from ``seed``."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        if not shapes:
            continue
        if isinstance(layer, layers.BatchNormalization):
            (c,) = shapes[0]
            gamma = rng.uniform(0.5, 1.5, c)
            beta = rng.normal(0.0, 0.2, c)
            mean = rng.normal(0.0, 0.5, c)
            var = rng.uniform(0.3, 2.0, c)
            values = [gamma, beta, mean, var]
        else:  # Conv2D / Dense: kernel [..., in, out] and bias [out]
            kernel = shapes[0]
            fan_in = int(np.prod(kernel[:-1]))
            values = [rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel)]
            values += [rng.normal(0.0, 0.1, s) for s in shapes[1:]]
        layer.set_weights([v.astype(np.float32) for v in values])


def to_onnx(model):
    """tf2onnx ``from_keras`` at opset 17 with a dynamic batch; IR version pinned to 8."""
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    proto.ir_version = IR_VERSION  # tf2onnx already maps opset 17 to IR 8; kept explicit
    return stable_names(proto)


def stable_names(proto):
    """Give tf2onnx's generated names a run-independent spelling; the graph itself is unchanged.

    tf2onnx numbers what it creates with a global counter (``Transpose__141``, ``unk__150``) and
    merges equal constants (a Slice's starts [0] and axes [0]); both follow set iteration order,
    so counters and the surviving constant's name vary from run to run, even with a fixed
    PYTHONHASHSEED. Here its constants become ``const_K`` and every ``__N`` counter is renumbered
    in order of first appearance; initializers go in order of first use. Reruns are byte-identical.
    """
    graph = proto.graph
    uses = [i for node in graph.node for i in node.input]
    first_use = {name: k for k, name in reversed(list(enumerate(uses)))}
    inits = sorted(graph.initializer, key=lambda t: first_use.get(t.name, len(uses)))
    consts = [t.name for t in inits if re.fullmatch(r"(const_\w+|Const)__\d+", t.name)]
    consts = {old: f"const_{k}" for k, old in enumerate(consts)}
    del graph.initializer[:]
    graph.initializer.extend(inits)

    dims = [d for v in (*graph.input, *graph.output) for d in v.type.tensor_type.shape.dim]
    fields = [(node, "name") for node in graph.node] + [(t, "name") for t in graph.initializer]
    fields += [(v, "name") for v in (*graph.input, *graph.output, *graph.value_info)]
    fields += [(d, "dim_param") for d in dims if d.HasField("dim_param")]
    lists = [seq for node in graph.node for seq in (node.input, node.output)]
    counters = {}

    def rename(name):
        name = consts.get(name, name)
        return re.sub(r"__(\d+)", lambda m: f"__{counters.setdefault(m[1], len(counters))}", name)

    for node in graph.node:  # number the counters in order of first appearance
        for name in (node.name, *node.input, *node.output):
            rename(name)
    for obj, attr in fields:
        setattr(obj, attr, rename(getattr(obj, attr)))
    for seq in lists:
        seq[:] = [rename(n) for n in seq]
    return proto


def keras_export(model, path):
    """Keras 3's own exporter (tf2onnx ``from_function`` underneath); IR version pinned to 8."""
    spec = [keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32", name="input")]
    model.export(str(path), format="onnx", input_signature=spec, opset_version=OPSET, verbose=False)
    proto = stable_names(onnx.load(str(path)))
    proto.ir_version = IR_VERSION
    onnx.save_model(proto, str(path))
    return proto


def inputs_for(model, seed):
    rng = np.random.default_rng([seed, 1])
    return rng.standard_normal((N_SAMPLES, *model.input_shape[1:])).astype(np.float32)


def write(model, name, out_dir, seed):
    """Seed the weights, write ``name.onnx`` and ``name.npz``; return the ONNX model."""
    set_seeded_weights(model, seed)
    x = inputs_for(model, seed)
    y = model(x, training=False).numpy()
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(out_dir / f"{name}.onnx"))
    bn = {
        f"{layer.name}.{w.name}": w.numpy()  # gamma, beta, moving_mean, moving_variance
        for layer in model.layers
        if isinstance(layer, layers.BatchNormalization)
        for w in layer.weights
    }
    np.savez_compressed(out_dir / f"{name}.npz", x=x, y=y, **bn)
    return proto


def op_summary(proto):
    """Op types in graph order, each once, with a count: ``Conv×3, Relu×2, ...``."""
    counts = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ", ".join(f"{op}×{n}" for op, n in counts.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)

    builds = {
        "cnn_avgpool_bn": cnn_avgpool_bn,
        "cnn_avgpool_bn_softmax": lambda: cnn_avgpool_bn(softmax=True),
        "dense_bn": dense_bn,
        "bn_first": bn_first,
        "avgpool_same_odd": avgpool_same_odd,
    }
    for name, build in builds.items():
        model = build()
        proto = write(model, name, args.out_dir, args.seed)  # softmax variant: same seed, same weights
        print(f"{name}.onnx: {op_summary(proto)}")
        if name == "cnn_avgpool_bn":
            path = args.out_dir / f"{name}_export.onnx"
            exported = keras_export(model, path)
            onnx.checker.check_model(exported, full_check=True)
            print(f"{path.name}: {op_summary(exported)}")
    print(
        f"tensorflow {tf.__version__}, keras {keras.__version__}, tf2onnx {tf2onnx.__version__},"
        f" onnx {onnx.__version__}, numpy {np.__version__}"
    )


if __name__ == "__main__":
    main()
