"""The iNNvestigate 2.1.2 side of the fidelity harness; runs in .venv-innvestigate only.

    bash benchmarks/innvestigate_env.sh
    .venv-innvestigate/bin/python benchmarks/innvestigate_ref.py --out-dir out/fidelity/innvestigate \
        [--fixture-dir tests/fixtures/innvestigate]

For each seeded tf.keras model MODEL this writes, into --out-dir:

* ``MODEL.onnx``: tf2onnx ``from_keras``, opset 17, IR 8, input ``input`` [batch,16,16,3] (channels
  last, as Keras has it), output ``logits``;
* ``MODEL.npz``: ``x`` float32 [8,16,16,3] in [0,1], ``y`` Keras' logits on them, and for every
  analyzer A in ANALYZERS ``A|b1`` and ``A|b8``: iNNvestigate's analysis of x[:1] and x[:8]
  (neuron_selection_mode "max_activation": each sample's largest logit, starting at its value), as
  float32; for BN_MODELS also ``A|b1|f64`` and ``A|b8|f64`` for A in BN_ANALYZERS, computed with
  Keras' floatx float64 (the same float32 weights, cast), and the BN parameters (see below);
* ``versions.json``: tensorflow, innvestigate, tf2onnx, numpy.

The models in MODELS are BN-free (iNNvestigate folds BatchNormalization wrongly, docs/design.md §2.2) and put
ReLU inside Conv2D/Dense (``activation="relu"``): iNNvestigate passes relevance through a layer's own activation
and through ``Activation`` layers, but sends it through a ``ReLU`` layer by its gradient. ``cnn`` has
biases, ``cnn_nobias`` none: iNNvestigate's α-β, z⁺ and w² rules treat biases differently from
lrpc (lrpc/Zennit: b⁺ in the α-β activator, b⁻ in the inhibitor, b² in w²'s denominator;
iNNvestigate: the whole b in both α-β terms, none in z⁺ and w²), so the bias-free model isolates the
rules themselves.

BN_MODELS holds ``cnn_bn``: Conv-BN-ReLU-pool twice, then Dense(relu)-Dense, the ReLU as an
``Activation`` layer after each BN, with seeded, deliberately non-trivial BN statistics (γ ∈ [0.5, 2],
β ~ N(0, 0.2²), μ ~ N(0, 0.3²), σ² ∈ [0.3, 3], Keras' ε = 1e-3), so that iNNvestigate's BN fold

    k' = γ/√(σ⁴ + ε),   b' = β − μ/√(σ⁴ + ε)      (exact: k = γ/√(σ² + ε),  b = β − γμ/√(σ² + ε))

visibly differs from the exact one. tf2onnx folds each BN into the Conv before it (exactly), so
``cnn_bn.npz`` also holds the BN parameters by Keras name (``bn1.gamma``, ``bn1.moving_variance``,
``bn1.epsilon``, ...); benchmarks/innvestigate_bn.py compares the folds. ``--fixture-dir DIR``
also writes ``cnn_bn.onnx`` and ``cnn_bn_reference.npz`` (FIXTURE_SAMPLES inputs, the float64 analyses
of them by FIXTURE_ANALYZERS, the BN parameters) for tests/reference/test_innvestigate_bn.py.

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
ANALYZERS = [
    "lrp.z",
    "lrp.epsilon",
    "lrp.alpha_1_beta_0",
    "lrp.alpha_2_beta_1",
    "lrp.flat",
    "lrp.w_square",
    "lrp.z_plus",
    "lrp.sequential_preset_a",
    "lrp.sequential_preset_b",
    "lrp.sequential_preset_a_flat",
    "lrp.sequential_preset_b_flat",
    "gradient",
    "input_t_gradient",
    "deconvnet",
    "guided_backprop",
]


def build(name):
    """Conv(8)-pool-Conv(16)-pool-Dense(32)-Dense(10) on 16x16x3, ReLU inside the layers."""
    from tensorflow import keras

    if name in BN_MODELS:
        return build_bn(name)
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


def build_bn(name):
    """Conv(8)-BN-ReLU-pool-Conv(16)-BN-ReLU-pool-Dense(32, relu)-Dense(10) on 16x16x3."""
    from tensorflow import keras

    inp = keras.Input(SHAPE, name="input")
    x = inp
    for i, width in enumerate((8, 16), start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    out = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name=name)


MODELS = ["cnn", "cnn_nobias"]  # benchmarks/fidelity.py loops over these
BN_MODELS = ["cnn_bn"]  # benchmarks/innvestigate_bn.py
BN_ANALYZERS = [
    "lrp.z",
    "lrp.epsilon",
    "lrp.alpha_1_beta_0",
    "lrp.alpha_2_beta_1",
    "lrp.z_plus",
    "lrp.w_square",
    "lrp.flat",
    "lrp.sequential_preset_a",
    "lrp.sequential_preset_b",
]  # also analyzed in float64
FIXTURE_SAMPLES = 4
FIXTURE_ANALYZERS = ["lrp.epsilon", "lrp.alpha_1_beta_0", "lrp.alpha_2_beta_1", "lrp.sequential_preset_a"]


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


def bn_statistics(model, weights, seed=2):
    """`weights` with every BatchNormalization's γ, β, moving mean and variance redrawn (seeded)."""
    rng = np.random.default_rng(seed)
    out, i = list(weights), 0
    for layer in model.layers:
        n = len(layer.get_weights())
        if layer.__class__.__name__ == "BatchNormalization":
            c = layer.get_weights()[0].shape
            draws = [
                rng.uniform(0.5, 2.0, c),
                rng.normal(0.0, 0.2, c),
                rng.normal(0.0, 0.3, c),
                rng.uniform(0.3, 3.0, c),
            ]
            out[i : i + n] = [d.astype(np.float32) for d in draws]
        i += n
    return out


def bn_arrays(model):
    """Each BatchNormalization's parameters by Keras name (``bn1.gamma``, ``bn1.beta``, ``bn1.moving_mean``,
    ``bn1.moving_variance``, ``bn1.epsilon``) and the kernel and bias of the Conv2D feeding it
    (``bn1.conv_kernel`` [kh, kw, in, out], ``bn1.conv_bias``): tf2onnx folds each BN into that Conv,
    so the ONNX file alone no longer holds them."""
    out = {}
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            for key, w in zip(("gamma", "beta", "moving_mean", "moving_variance"), layer.get_weights()):
                out[f"{layer.name}.{key}"] = w
            out[f"{layer.name}.epsilon"] = np.float64(layer.epsilon)  # as Keras uses it, not rounded to float32
            conv = layer._inbound_nodes[0].inbound_layers
            out[f"{layer.name}.conv_kernel"], out[f"{layer.name}.conv_bias"] = conv.get_weights()
    return out


def export(out_dir: Path):
    import tensorflow as tf
    import tf2onnx
    from importlib.metadata import version

    x = np.random.default_rng(1).uniform(0.0, 1.0, (BATCH, *SHAPE)).astype(np.float32)
    for name in MODELS + BN_MODELS:
        model = build(name)
        weights = bn_statistics(model, seeded_weights(model))
        model.set_weights(weights)
        spec = (tf.TensorSpec((None, *SHAPE), tf.float32, name="input"),)
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
        proto.ir_version = 8
        (out_dir / f"{name}.onnx").write_bytes(proto.SerializeToString())
        np.savez(out_dir / f"{name}.weights.npz", *weights)
        np.savez(out_dir / f"{name}.npz", x=x, y=model(x).numpy(), **bn_arrays(model))
    versions = {p: version(p) for p in ("tensorflow", "innvestigate", "tf2onnx", "numpy", "onnx")}
    (out_dir / "versions.json").write_text(json.dumps(versions, indent=1))


def load_model(name, out_dir: Path):
    """MODEL rebuilt in Keras' current float type with the exported weights."""
    model = build(name)
    with np.load(out_dir / f"{name}.weights.npz") as w:
        model.set_weights([w[f"arr_{i}"].astype(model.dtype) for i in range(len(w.files))])
    return model


def analyze_all(model, x, analyzers, suffix=""):
    """{"A|bN" + suffix: analysis of x[:N]} for every analyzer A and N in (1, BATCH)."""
    import innvestigate

    out = {}
    for analyzer_name in analyzers:
        analyzer = innvestigate.create_analyzer(analyzer_name, model)
        for n in (1, BATCH):
            out[f"{analyzer_name}|b{n}{suffix}"] = analyzer.analyze(x[:n].astype(model.dtype))
    return out


def analyze(out_dir: Path):
    """float32 analyses of every model; for BN_MODELS also float64 ones (``A|bN|f64``, BN_ANALYZERS)."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    for name in MODELS + BN_MODELS:
        model = load_model(name, out_dir)
        data = dict(np.load(out_dir / f"{name}.npz"))
        x = data["x"]
        assert np.allclose(model.predict(x, verbose=0), data["y"], rtol=1e-5, atol=1e-6), "weights did not round-trip"
        data.update({k: v.astype(np.float32) for k, v in analyze_all(model, x, ANALYZERS).items()})
        if name in BN_MODELS:  # float64: iNNvestigate's own rules without float32 round-off
            tf.keras.backend.set_floatx("float64")
            data.update(analyze_all(load_model(name, out_dir), x, BN_ANALYZERS, "|f64"))
            tf.keras.backend.set_floatx("float32")
        np.savez(out_dir / f"{name}.npz", **data)


def write_fixture(out_dir: Path, fixture_dir: Path, name="cnn_bn"):
    """A small copy for CI: the ONNX model, FIXTURE_SAMPLES inputs, FIXTURE_ANALYZERS' float64 analyses
    of them (keyed by analyzer) and the BN parameters."""
    data = np.load(out_dir / f"{name}.npz")
    n = FIXTURE_SAMPLES
    reference = {
        "x": data["x"][:n],
        **{a: data[f"{a}|b{BATCH}|f64"][:n] for a in FIXTURE_ANALYZERS},
        **{k: data[k] for k in data.files if k.startswith("bn")},
    }
    fixture_dir.mkdir(parents=True, exist_ok=True)
    (fixture_dir / f"{name}.onnx").write_bytes((out_dir / f"{name}.onnx").read_bytes())
    np.savez(fixture_dir / f"{name}_reference.npz", **reference)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--phase", choices=["all", "export", "analyze"], default="all")
    ap.add_argument("--fixture-dir", type=Path, help="also write the cnn_bn CI fixture there")
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.phase == "export":
        export(args.out_dir)
    elif args.phase == "analyze":
        analyze(args.out_dir)
    else:  # eager and graph mode cannot share a process
        for phase in ("export", "analyze"):
            subprocess.run([sys.executable, __file__, "--out-dir", str(args.out_dir), "--phase", phase], check=True)
    if args.fixture_dir is not None and args.phase != "export":
        write_fixture(args.out_dir, args.fixture_dir)


if __name__ == "__main__":
    main()
