"""Keras 3 models with seeded weights for the Keras frontend: every layer kind lrpc reads, the two-output
autoencoder of the coverage issue, and VGG-16. Run in the TensorFlow environment (scripts/keras_env.sh).

    .venv-keras/bin/python models/keras_models.py -o out/   # writes NAME.keras for each model below

- ``zoo_2d``: Conv2D, BatchNormalization, ReLU, DepthwiseConv2D, SeparableConv2D, Add, MaxPooling2D and
  AveragePooling2D with padding "same" and "valid", Concatenate, Conv2DTranspose, LeakyReLU,
  Activation, Dropout, GlobalAveragePooling2D, GlobalMaxPooling2D, Dense; channels-last 12×12×3.
- ``zoo_1d``: Conv1D (with BN), MaxPooling1D and AveragePooling1D ("same" and "valid"), Add,
  Concatenate, Activation, GlobalAveragePooling1D, GlobalMaxPooling1D, Dense; a 16×2 sequence.
- ``autoencoder``: models/autoencoder.py's architecture in Keras, channels-last ([N, W, W, C]):
  Conv2D (1×W) + SELU, SpatialDropout2D, Conv2D (W×1) + SELU, Dropout, Flatten, Dense + SELU = the
  layer ``latent``; the head ``class_logits`` (Dense); the decoder Dense + SELU, Reshape,
  Conv2DTranspose 1×1, W×1 (SELU) and 1×W (tanh) = ``reconstruction``.
- ``vgg16``: ``keras.applications.VGG16(weights=None)`` (138 M parameters), seeded.
- the modern convnets of ``APPLICATIONS`` (``application(name, size)``): keras.applications
  MobileNetV3Small/Large (hard-swish, squeeze-excitation with hard-sigmoid gates), EfficientNetB0 and
  EfficientNetV2B0 (swish, sigmoid SE gates), ConvNeXtTiny (grouped 7×7 Conv2D, LayerNormalization, exact
  gelu) and ResNet50, ``weights=None``, each with its own preprocessing layers, 10 classes, small inputs
  (32×32 by default) and Keras' own seeded initializers; then ``reset_batchnorm`` sets every
  BatchNormalization's moving statistics to those of one seeded batch, so that activations neither vanish
  nor explode through the depth (random BN statistics would: MobileNetV3Large's logits were ~1e-11).

Transformers (MultiHeadAttention, a ViT-like model) are in ``models/keras_transformers.py``.

Weights come from ``np.random.default_rng(seed)`` (``seed_weights``): He-normal kernels, small biases,
BatchNormalization statistics far from (1, 0, 0, 1), so a wrongly folded BN changes the output.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from lrpc.frontend.keras import all_layers  # noqa: E402


def zoo_2d() -> keras.Model:
    """Every 2-D layer kind of the issue in one small DAG (12×12×3 → 5 logits)."""
    inp = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", name="conv_a")(inp)
    x = layers.BatchNormalization(name="bn_a")(x)
    x = layers.ReLU(name="relu_a")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    y = layers.Activation("relu", name="act_dw")(y)
    y = layers.SeparableConv2D(6, 3, padding="same", name="separable")(y)
    x = layers.Add(name="residual")([x, y])
    m = layers.MaxPooling2D(2, padding="valid", name="max_valid")(x)  # 12 -> 6
    a = layers.AveragePooling2D(2, padding="valid", name="avg_valid")(x)  # 12 -> 6
    x = layers.Concatenate(name="concat")([m, a])
    x = layers.Conv2D(8, 3, strides=1, padding="valid", use_bias=False, name="conv_b")(x)  # 6 -> 4
    x = layers.BatchNormalization(name="bn_b")(x)
    x = layers.LeakyReLU(negative_slope=0.1, name="leaky")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    x = layers.MaxPooling2D(3, strides=1, padding="same", name="max_same")(x)  # 4 -> 4
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="avg_same")(x)  # 4 -> 2
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="deconv")(x)  # 2 -> 4
    x = layers.ReLU(name="relu_d")(x)
    g = layers.GlobalAveragePooling2D(name="gap")(x)
    h = layers.GlobalMaxPooling2D(name="gmp")(x)
    x = layers.Concatenate(name="pooled")([g, h])
    x = layers.Dense(8, activation="relu", name="fc")(x)
    out = layers.Dense(5, name="logits")(x)
    return keras.Model(inp, out, name="zoo_2d")


def zoo_1d() -> keras.Model:
    """Conv1D and the 1-D pools (16 steps × 2 features → 4 logits)."""
    inp = keras.Input((16, 2), name="sequence")
    x = layers.Conv1D(6, 3, padding="same", name="conv1d_a")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("relu", name="act_a")(x)
    y = layers.Conv1D(6, 3, padding="same", activation="relu", name="conv1d_b")(x)
    x = layers.Add(name="residual")([x, y])
    m = layers.MaxPooling1D(2, padding="valid", name="max_valid")(x)  # 16 -> 8
    a = layers.AveragePooling1D(3, strides=2, padding="same", name="avg_same")(x)  # 16 -> 8
    x = layers.Concatenate(name="concat")([m, a])
    x = layers.Conv1D(8, 3, padding="valid", name="conv1d_c")(x)  # 8 -> 6
    x = layers.ReLU(name="relu_c")(x)
    x = layers.MaxPooling1D(3, strides=2, padding="same", name="max_same")(x)  # 6 -> 3
    x = layers.AveragePooling1D(2, padding="valid", name="avg_valid")(x)  # 3 -> 1
    g = layers.GlobalAveragePooling1D(name="gap")(x)
    h = layers.GlobalMaxPooling1D(name="gmp")(x)
    x = layers.Concatenate(name="pooled")([g, h])
    out = layers.Dense(4, name="logits")(x)
    return keras.Model(inp, out, name="zoo_1d")


def autoencoder(width=16, channels=1, n_filter=8, n_dense=16, classes=2, dropout=0.65) -> keras.Model:
    """models/autoencoder.py's two-output autoencoder, channels-last, smaller filters by default."""
    code = 2 * n_filter
    inp = keras.Input((width, width, channels), name="input")
    h = layers.Conv2D(n_filter, (1, width), activation="selu", name="conv1")(inp)  # [W, 1, F]
    h = layers.SpatialDropout2D(dropout, name="drop1")(h)
    h = layers.Conv2D(code, (width, 1), activation="selu", name="conv2")(h)  # [1, 1, 2F]
    h = layers.Dropout(dropout, name="drop2")(h)
    h = layers.Flatten(name="flatten")(h)
    z = layers.Dense(n_dense, activation="selu", name="latent")(h)
    logits = layers.Dense(classes, name="class_logits")(z)
    d = layers.Dense(code, activation="selu", name="dense2")(z)
    d = layers.Reshape((1, 1, code), name="unflatten")(d)
    d = layers.Conv2DTranspose(code, (1, 1), activation="selu", name="deconv3")(d)
    d = layers.Conv2DTranspose(n_filter, (width, 1), activation="selu", name="deconv4")(d)  # [W, 1, F]
    rec = layers.Conv2DTranspose(channels, (1, width), activation="tanh", name="reconstruction")(d)
    return keras.Model(inp, [logits, rec], name="autoencoder")


def vgg16() -> keras.Model:
    """VGG-16 (224×224×3 → 1000, softmax), no downloaded weights."""
    return keras.applications.VGG16(weights=None)


BUILD = {"zoo_2d": zoo_2d, "zoo_1d": zoo_1d, "autoencoder": autoencoder, "vgg16": vgg16}

APPLICATIONS = {  # name: the keras.applications constructor
    "mobilenet_v3_small": "MobileNetV3Small",
    "mobilenet_v3_large": "MobileNetV3Large",
    "efficientnet_b0": "EfficientNetB0",
    "efficientnet_v2_b0": "EfficientNetV2B0",
    "convnext_tiny": "ConvNeXtTiny",
    "resnet50": "ResNet50",
}


def images(shape, seed: int = 0, n: int = 8) -> np.ndarray:
    """`n` seeded images of `shape` (H, W, C), pixel values uniform in [0, 255] as the preprocessing expects."""
    return np.random.default_rng([seed, 2]).uniform(0.0, 255.0, (n, *shape)).astype(np.float32)


def application(name: str, size: int = 32, classes: int = 10, seed: int = 0, classifier_activation=None) -> keras.Model:
    """keras.applications model `name` (a key of APPLICATIONS or a constructor's own name, e.g. "EfficientNetB3";
    weights=None, seeded), BatchNorm reset on one batch.
    Logits out by default (a softmax of these random nets saturates: probabilities 0 or 1 say little)."""
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, APPLICATIONS.get(name, name))(
        weights=None, input_shape=(size, size, 3), classes=classes, classifier_activation=classifier_activation
    )
    n = min(256, max(16, 256 * 32 * 32 // (size * size)))  # 256 at 32×32: late 1×1 maps need many samples
    return reset_batchnorm(model, images((size, size, 3), seed, n=n))


def reset_batchnorm(model: keras.Model, x: np.ndarray) -> keras.Model:
    """Every BatchNormalization's moving mean and variance := the statistics of its input on batch `x`.

    One training-mode forward pass with momentum 0 (Keras sets moving = momentum·moving + (1 − momentum)·batch)
    and dropout off; each BN then sees its input as normalized by the BNs before it, as at inference."""
    bns = [layer for layer in all_layers(model) if isinstance(layer, layers.BatchNormalization)]
    drops = [layer for layer in all_layers(model) if isinstance(layer, layers.Dropout)]
    saved = [(layer, layer.momentum) for layer in bns], [(layer, layer.rate) for layer in drops]
    try:
        for layer in bns:
            layer.momentum = 0.0
        for layer in drops:
            layer.rate = 0.0
        model(x, training=True)
    finally:
        for layer, momentum in saved[0]:
            layer.momentum = momentum
        for layer, rate in saved[1]:
            layer.rate = rate
    return model


def seed_weights(model: keras.Model, seed: int = 0) -> keras.Model:
    """He-normal kernels (fan-in: the kernel's size over all axes but the last), N(0, 0.1²) biases,
    BN γ ∈ [0.5, 1.5], β ~ N(0, 0.2²), μ ~ N(0, 0.5²), σ² ∈ [0.3, 2]; all drawn from `seed`."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            seed_weights(layer, int(rng.integers(1 << 31)))
            continue
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, layers.BatchNormalization):
            (c,) = weights[0].shape
            values = [
                rng.uniform(0.5, 1.5, c),
                rng.normal(0.0, 0.2, c),
                rng.normal(0.0, 0.5, c),
                rng.uniform(0.3, 2.0, c),
            ]
        else:
            values = [
                rng.normal(0.0, np.sqrt(2.0 / max(1, int(np.prod(w.shape[:-1])))), w.shape)
                if w.ndim > 1
                else rng.normal(0.0, 0.1, w.shape)
                for w in weights
            ]
        layer.set_weights([v.astype(np.float32) for v in values])
    return model


def build(name: str, seed: int = 0) -> keras.Model:
    """The seeded model `name` of BUILD."""
    keras.utils.set_random_seed(seed)
    return seed_weights(BUILD[name](), seed)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out-dir", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=32, help="input height and width of the APPLICATIONS models")
    ap.add_argument("names", nargs="*", default=[n for n in BUILD if n != "vgg16"], choices=[*BUILD, *APPLICATIONS])
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        path = args.out_dir / f"{name}.keras"
        model = application(name, args.size, seed=args.seed) if name in APPLICATIONS else build(name, args.seed)
        model.save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
