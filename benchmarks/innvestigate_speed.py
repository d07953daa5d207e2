"""The iNNvestigate 2.1.2 side of benchmarks/speed.py: a timing server; runs in .venv-innvestigate only.

    .venv-innvestigate/bin/python benchmarks/innvestigate_speed.py --spec S.json --weights W.npz \
        --inputs X.npy --logits-out Y.npy --threads 2

It builds the tf.keras model that S.json describes (channels last, layer names from the torch module
names), loads W.npz (the torch weights, already transposed to Keras' layouts by benchmarks/speed_refs.py),
computes Keras' logits on X.npy (NCHW, transposed here) into Y.npy, so that the caller checks the
weights against onnxruntime's logits, and then answers one JSON request per line on stdin:

    {"cmd": "first", "analyzer": "lrp.epsilon", "batch": 1}  → {"create_s": …, "first_call_s": …}
    {"cmd": "run", "analyzer": "lrp.epsilon", "batch": 16}   → {"s": …}   (one analyze() call)
    {"cmd": "quit"}

"first" creates the analyzer (neuron_selection_mode "max_activation", iNNvestigate's default) and times
its first analyze() call, which builds the analyzer's graph; "run" times one later call, in seconds,
measured here so that the pipe's latency is not counted. Graph mode (disable_eager_execution), as
iNNvestigate 2 requires; TF's intra- and inter-op pools get --threads threads each. oneDNN is left at
TF's default (on), as a user gets it. Replies go to the original stdout; everything else (TF's logs,
prints) to stderr.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def keras_session(threads):
    """Graph mode with `threads` intra- and inter-op threads, before any Keras model exists."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.compat.v1.disable_eager_execution()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
    tf.compat.v1.keras.backend.set_session(tf.compat.v1.Session(config=config))
    return tf


def conv(keras, x, layer):
    """A torch Conv2d: symmetric padding as ZeroPadding2D + 'valid' unless Keras' 'same' is identical."""
    k, s, p = layer["kernel"], layer["stride"], layer["pad"]
    same = s == 1 and 2 * p == k - 1
    if p and not same:
        x = keras.layers.ZeroPadding2D(p, name=layer["name"] + "_pad")(x)
    return keras.layers.Conv2D(
        layer["filters"],
        k,
        s,
        padding="same" if same else "valid",
        use_bias=layer["bias"],
        activation=layer.get("activation"),
        name=layer["name"],
    )(x)


def sequential(keras, spec):
    """Conv / max-pool / flatten / dense layers in order (VGG, the digits CNN)."""
    inp = keras.Input(spec["input"], name="input")
    x = inp
    for layer in spec["layers"]:
        if layer["type"] == "conv":
            x = conv(keras, x, layer)
        elif layer["type"] == "maxpool":
            x = keras.layers.MaxPooling2D(layer["size"], layer["stride"], name=layer["name"])(x)
        elif layer["type"] == "flatten":
            x = keras.layers.Flatten(name=layer["name"])(x)
        elif layer["type"] == "dense":
            x = keras.layers.Dense(
                layer["units"], use_bias=layer["bias"], activation=layer.get("activation"), name=layer["name"]
            )(x)
        else:
            raise ValueError(f"unknown layer {layer}")
    return keras.Model(inp, x, name=spec["name"])


def resnet(keras, spec):
    """models/resnet.py's bottleneck ResNet (BatchNorm kept as layers, eps as torch's), names as torch's."""
    bn_eps = spec["bn_eps"]

    def conv_bn(x, name, bn, filters, kernel, stride, pad, relu):
        x = conv(keras, x, dict(name=name, filters=filters, kernel=kernel, stride=stride, pad=pad, bias=False))
        x = keras.layers.BatchNormalization(epsilon=bn_eps, name=bn)(x)
        return keras.layers.Activation("relu", name=bn + "_relu")(x) if relu else x

    inp = keras.Input(spec["input"], name="input")
    x = conv_bn(inp, "t_stem_0", "t_stem_1", spec["widths"][0], 7, 2, 3, True)
    x = keras.layers.ZeroPadding2D(1, name="t_stem_3_pad")(x)  # after a ReLU, zeros pad as -inf would
    x = keras.layers.MaxPooling2D(3, 2, name="t_stem_3")(x)
    cin, index = spec["widths"][0], 0
    for stage, (count, width) in enumerate(zip(spec["layers"], spec["widths"])):
        for i in range(count):
            stride, b = (2 if stage > 0 and i == 0 else 1), f"t_blocks_{index}_"
            y = conv_bn(x, b + "conv1", b + "bn1", width, 1, 1, 0, True)
            y = conv_bn(y, b + "conv2", b + "bn2", width, 3, stride, 1, True)
            y = conv_bn(y, b + "conv3", b + "bn3", 4 * width, 1, 1, 0, False)
            if stride != 1 or cin != 4 * width:
                x = conv_bn(x, b + "shortcut_0", b + "shortcut_1", 4 * width, 1, stride, 0, False)
            x = keras.layers.Activation("relu", name=b + "relu")(keras.layers.Add(name=b + "add")([y, x]))
            cin, index = 4 * width, index + 1
    x = keras.layers.GlobalAveragePooling2D(name="t_pool")(x)
    return keras.Model(inp, keras.layers.Dense(spec["classes"], name="t_fc")(x), name=spec["name"])


def load_weights(model, path):
    """Each layer named in the .npz ("LAYER|i" keys) gets its arrays; every weighted layer must be named."""
    with np.load(path) as data:
        grouped = {}
        for key in data.files:
            layer, i = key.rsplit("|", 1)
            grouped.setdefault(layer, {})[int(i)] = data[key]
    for layer in model.layers:
        if layer.weights:
            arrays = grouped.pop(layer.name)
            layer.set_weights([arrays[i] for i in range(len(arrays))])
    if grouped:
        raise ValueError(f"weights for layers the Keras model lacks: {sorted(grouped)[:5]}")


def serve(model, x, reply):
    """Answer requests until "quit"; x is the NHWC input of the largest batch."""
    import innvestigate

    analyzers, inputs = {}, {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            return
        batch = request["batch"]
        inputs.setdefault(batch, np.ascontiguousarray(x[:batch]))
        if request["cmd"] == "first":
            start = time.perf_counter()
            analyzers[request["analyzer"]] = innvestigate.create_analyzer(request["analyzer"], model)
            created = time.perf_counter()
            analyzers[request["analyzer"]].analyze(inputs[batch])
            reply({"create_s": created - start, "first_call_s": time.perf_counter() - start})
        else:
            start = time.perf_counter()
            analyzers[request["analyzer"]].analyze(inputs[batch])
            reply({"s": time.perf_counter() - start})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--spec", "--weights", "--inputs", "--logits-out"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    channel = os.fdopen(os.dup(1), "w")  # replies only; fd 1 now goes to stderr
    os.dup2(2, 1)

    def reply(obj):
        channel.write(json.dumps(obj) + "\n")
        channel.flush()

    start = time.perf_counter()
    tf = keras_session(args.threads)
    with open(args.spec) as f:
        spec = json.load(f)
    model = (resnet if spec["kind"] == "resnet" else sequential)(tf.keras, spec)
    load_weights(model, args.weights)
    x = np.load(args.inputs).transpose(0, 2, 3, 1).copy()
    np.save(args.logits_out, model.predict(x, verbose=0))
    from importlib.metadata import version

    reply(
        {
            "ready": True,
            "setup_s": time.perf_counter() - start,
            "versions": {p: version(p) for p in ("tensorflow", "keras", "innvestigate", "numpy")},
            "onednn": ("TF_ENABLE_ONEDNN_OPTS=" + os.environ["TF_ENABLE_ONEDNN_OPTS"])
            if "TF_ENABLE_ONEDNN_OPTS" in os.environ
            else "oneDNN on (TF's default)",
        }
    )
    serve(model, x, reply)


if __name__ == "__main__":
    main()
