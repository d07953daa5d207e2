"""The iNNvestigate 2.1.2 side of the fidelity harness; runs in .venv-innvestigate only.

    bash benchmarks/innvestigate_env.sh
    .venv-innvestigate/bin/python benchmarks/innvestigate_ref.py --out-dir out/fidelity/innvestigate

For each seeded tf.keras model MODEL this writes, into --out-dir:

* ``MODEL.onnx``: tf2onnx ``from_keras``, opset 17, IR 8, input ``input`` [batch,16,16,3] (channels
  last, as Keras has it), output ``logits``;
* ``MODEL.npz``: ``x`` float32 [8,16,16,3] in [0,1], ``y`` Keras' logits on them, and for every
  analyzer A in ANALYZERS ``A|b1`` and ``A|b8``: iNNvestigate's analysis of x[:1] and x[:8]
  (neuron_selection_mode "max_activation": each sample's largest logit, starting at its value);
* ``versions.json``: tensorflow, innvestigate, tf2onnx, numpy.

The models are BN-free (iNNvestigate folds BatchNormalization wrongly, DESIGN §6) and put ReLU inside
Conv2D/Dense (``activation="relu"``): iNNvestigate passes relevance through a layer's own activation
and through ``Activation`` layers, but sends it through a ``ReLU`` layer by its gradient. ``cnn`` has
biases, ``cnn_nobias`` none: iNNvestigate's α-β, z⁺ and w² rules treat biases differently from
lrpc (lrpc/Zennit: b⁺ in the α-β activator, b⁻ in the inhibitor, b² in w²'s denominator;
iNNvestigate: the whole b in both α-β terms, none in z⁺ and w²), so the bias-free model isolates the
rules themselves.

iNNvestigate needs TF1 graph mode (``disable_eager_execution``), tf2onnx needs eager mode, so the work
runs in two child processes: ``--phase export`` (eager: build, seed, convert, save weights) and
``--phase analyze`` (graph mode: rebuild, load the same weights, analyze).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # plain kernels: stable float round-off

import numpy as np  # noqa: E402

SHAPE = (16, 16, 3)
BATCH = 8
OPSET = 17
# every analyzer is computed, so a row goes live on the lrpc side by naming lrpc's spec there
ANALYZERS = ["lrp.z", "lrp.epsilon", "lrp.alpha_1_beta_0", "lrp.alpha_2_beta_1", "lrp.flat", "lrp.w_square",
             "lrp.z_plus", "lrp.sequential_preset_a", "lrp.sequential_preset_b", "lrp.sequential_preset_a_flat",
             "lrp.sequential_preset_b_flat", "gradient", "input_t_gradient", "deconvnet", "guided_backprop"]


def build(name):
    """Conv(8)-pool-Conv(16)-pool-Dense(32)-Dense(10) on 16x16x3, ReLU inside the layers."""
    from tensorflow import keras
    bias = name != "cnn_nobias"
    inp = keras.Input(SHAPE, name="input")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", use_bias=bias, name="conv1")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", use_bias=bias, name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", use_bias=bias, name="fc1")(x)
    out = keras.layers.Dense(10, use_bias=bias, name="logits")(x)
    return keras.Model(inp, out, name=name)


MODELS = ["cnn", "cnn_nobias"]


def seeded_weights(model, seed=0):
    """He-normal kernels and N(0, 0.1²) biases from one generator, in layer order."""
    rng = np.random.default_rng(seed)
    out = []
    for layer in model.layers:
        for w in layer.get_weights():
            shape = w.shape
            if len(shape) > 1:
                out.append(rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape).astype(np.float32))
            else:
                out.append(rng.normal(0.0, 0.1, shape).astype(np.float32))
    return out


def export(out_dir: Path):
    import tensorflow as tf
    import tf2onnx
    from importlib.metadata import version
    x = np.random.default_rng(1).uniform(0.0, 1.0, (BATCH, *SHAPE)).astype(np.float32)
    for name in MODELS:
        model = build(name)
        weights = seeded_weights(model)
        model.set_weights(weights)
        spec = (tf.TensorSpec((None, *SHAPE), tf.float32, name="input"),)
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
        proto.ir_version = 8
        (out_dir / f"{name}.onnx").write_bytes(proto.SerializeToString())
        np.savez(out_dir / f"{name}.weights.npz", *weights)
        np.savez(out_dir / f"{name}.npz", x=x, y=model(x).numpy())
    versions = {p: version(p) for p in ("tensorflow", "innvestigate", "tf2onnx", "numpy", "onnx")}
    (out_dir / "versions.json").write_text(json.dumps(versions, indent=1))


def analyze(out_dir: Path):
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    import innvestigate
    for name in MODELS:
        model = build(name)
        with np.load(out_dir / f"{name}.weights.npz") as w:
            model.set_weights([w[f"arr_{i}"] for i in range(len(w.files))])
        data = dict(np.load(out_dir / f"{name}.npz"))
        x = data["x"]
        assert np.allclose(model.predict(x, verbose=0), data["y"], rtol=1e-5, atol=1e-6), "weights did not round-trip"
        for analyzer_name in ANALYZERS:
            analyzer = innvestigate.create_analyzer(analyzer_name, model)
            for n in (1, BATCH):
                data[f"{analyzer_name}|b{n}"] = analyzer.analyze(x[:n]).astype(np.float32)
        np.savez(out_dir / f"{name}.npz", **data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--phase", choices=["all", "export", "analyze"], default="all")
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.phase == "export":
        export(args.out_dir)
    elif args.phase == "analyze":
        analyze(args.out_dir)
    else:  # eager and graph mode cannot share a process
        for phase in ("export", "analyze"):
            subprocess.run([sys.executable, __file__, "--out-dir", str(args.out_dir), "--phase", phase], check=True)


if __name__ == "__main__":
    main()
