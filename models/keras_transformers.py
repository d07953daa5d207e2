"""Small Keras 3 transformers with seeded weights, for the Keras front end's attention path.

    .venv-keras/bin/python models/keras_transformers.py -o out/   # writes NAME.keras for each model below

- ``tiny_transformer``: an input [batch, seq, d] float (no embedding; ``seq=None`` keeps the sequence length
  dynamic), ``blocks`` pre-norm blocks, each

      h = x + MHA(LN₁(x))                 (self-attention; ``causal=True``: ``use_causal_mask=True``)
      y = h + Dense₂(GELU(Dense₁(LN₂(h))))

  then LN, GlobalAveragePooling1D (``pool="mean"``) or the first token (``pool="first"``), Dense logits.
- ``tiny_vit``: Conv2D patch embedding (kernel = stride = ``patch``) → Reshape to tokens [n, d] →
  + a learned position embedding (``PositionEmbedding``, one weight [n, d]) → 2 blocks → LN → mean → logits.

Keras' MultiHeadAttention computes, per head h (EinsumDense projections, d_k = key_dim):

    q = x·W_q + b_q,  k = x·W_k + b_k,  v = x·W_v + b_v          (W: [d, heads, d_k])
    A = softmax(q·kᵀ/√d_k + M)                                   (M: 0, or a large negative number masked)
    O = Σ_h (A·v)_h · W_o,h + b_o                                 (W_o: [heads, d_k, d])

``seed_transformer`` draws every weight from ``np.random.default_rng(seed)``: kernels N(0, 1/fan-in) (an
MHA projection's fan-in is d, the output projection's heads·d_k), biases and LayerNorm β N(0, 0.1²),
LayerNorm γ U(0.5, 1.5), the position embedding N(0, 0.5²). ``bias=False`` builds the models without any
bias or β (for conservation checks: every addend is then an activation).
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


@keras.saving.register_keras_serializable("lrpc_models")
class PositionEmbedding(layers.Layer):
    """x + P, P a learned weight of the token axes' shape ([n, d]); load a file using it after importing
    this module (Keras finds the class by its registered name `lrpc_models>PositionEmbedding`)."""

    def build(self, input_shape):
        self.table = self.add_weight(name="table", shape=tuple(input_shape[1:]), initializer="zeros")

    def call(self, x):
        return x + self.table


def block(x, name: str, heads: int = 2, key_dim: int = 8, hidden: int = 32, causal: bool = False, bias: bool = True):
    """One pre-norm transformer block (module docstring) on x [batch, seq, d]; layers named `name`_*."""
    d = x.shape[-1]
    h = layers.LayerNormalization(epsilon=1e-5, center=bias, name=f"{name}_ln1")(x)
    h = layers.MultiHeadAttention(heads, key_dim, use_bias=bias, name=f"{name}_mha")(h, h, use_causal_mask=causal)
    x = layers.Add(name=f"{name}_res1")([x, h])
    h = layers.LayerNormalization(epsilon=1e-5, center=bias, name=f"{name}_ln2")(x)
    h = layers.Dense(hidden, activation="gelu", use_bias=bias, name=f"{name}_fc1")(h)
    h = layers.Dense(d, use_bias=bias, name=f"{name}_fc2")(h)
    return layers.Add(name=f"{name}_res2")([x, h])


def head(x, pool: str, classes: int, bias: bool):
    """LN, then the mean over tokens or the first token, then Dense logits."""
    x = layers.LayerNormalization(epsilon=1e-5, center=bias, name="ln_final")(x)
    if pool == "mean":
        x = layers.GlobalAveragePooling1D(name="pool")(x)
    elif pool == "first":
        x = _first_token(x)
    else:
        raise ValueError(f"pool must be 'mean' or 'first', not {pool!r}")
    return layers.Dense(classes, use_bias=bias, name="logits")(x)


def _first_token(x):
    """x[:, 0] as Keras layers (a Lambda would not load in Keras' safe mode): Cropping1D to 1 step, Flatten."""
    steps = x.shape[1]
    if steps is None:
        raise ValueError("pool='first' needs a static sequence length (Cropping1D): give seq")
    x = layers.Cropping1D((0, steps - 1), name="first_token")(x)
    return layers.Flatten(name="first_flat")(x)


def tiny_transformer(
    seq: int | None = None,
    d: int = 16,
    blocks: int = 1,
    heads: int = 2,
    causal: bool = False,
    pool: str = "mean",
    classes: int = 3,
    bias: bool = True,
    name: str | None = None,
) -> keras.Model:
    """[batch, seq, d] → `classes` logits (module docstring)."""
    inp = keras.Input((seq, d), name="tokens")
    x = inp
    for k in range(blocks):
        x = block(x, f"b{k}", heads=heads, key_dim=d // heads, hidden=2 * d, causal=causal, bias=bias)
    out = head(x, pool, classes, bias)
    return keras.Model(inp, out, name=name or f"tiny_transformer{'_causal' if causal else ''}_{pool}")


def tiny_vit(
    size: int = 16,
    patch: int = 4,
    channels: int = 3,
    d: int = 16,
    blocks: int = 2,
    heads: int = 2,
    classes: int = 5,
    bias: bool = True,
) -> keras.Model:
    """[batch, size, size, channels] → `classes` logits through patch tokens (module docstring)."""
    inp = keras.Input((size, size, channels), name="image")
    x = layers.Conv2D(d, patch, strides=patch, use_bias=bias, name="patch_embed")(inp)
    n = (size // patch) ** 2
    x = layers.Reshape((n, d), name="tokens")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    for k in range(blocks):
        x = block(x, f"b{k}", heads=heads, key_dim=d // heads, hidden=2 * d, bias=bias)
    return keras.Model(inp, head(x, "mean", classes, bias), name="tiny_vit")


def _fan_in(path: str, shape) -> int:
    if any(f"/{p}/kernel" in f"/{path}" for p in ("query", "key", "value")):
        return int(shape[0])  # EinsumDense [d, heads, d_k]: each unit reads d inputs
    return max(1, int(np.prod(shape[:-1])))


def seed_transformer(model: keras.Model, seed: int = 0) -> keras.Model:
    """Every weight of `model` drawn from `seed` (module docstring)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        path, shape = v.path, tuple(v.shape)
        leaf = path.rsplit("/", 1)[-1]
        if leaf == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("bias", "beta"):
            value = rng.normal(0.0, 0.1, shape)
        elif leaf == "table":
            value = rng.normal(0.0, 0.5, shape)
        else:
            value = rng.normal(0.0, np.sqrt(1.0 / _fan_in(path, shape)), shape)
        v.assign(value.astype(np.float32))
    return model


BUILD = {
    "tiny_transformer": lambda: tiny_transformer(),
    "tiny_transformer_causal": lambda: tiny_transformer(causal=True),
    "tiny_transformer_first": lambda: tiny_transformer(seq=6, pool="first"),
    "tiny_vit": lambda: tiny_vit(),
}


def build(name: str, seed: int = 0, **kwargs) -> keras.Model:
    """The seeded model `name` of BUILD (kwargs: the builder's, e.g. bias=False, instead of BUILD's)."""
    keras.utils.set_random_seed(seed)
    model = {"tiny_transformer": tiny_transformer, "tiny_vit": tiny_vit}[name](**kwargs) if kwargs else BUILD[name]()
    return seed_transformer(model, seed)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out-dir", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("names", nargs="*", default=list(BUILD), choices=list(BUILD))
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        path = args.out_dir / f"{name}.keras"
        if path.exists():
            raise SystemExit(f"{path} exists: lrpc does not overwrite it; remove it or choose another --out-dir")
        build(name, args.seed).save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
