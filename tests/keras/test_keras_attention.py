"""Keras MultiHeadAttention through lrpc's Keras front end (models/keras_transformers.py): small transformers
and a ViT-like model saved as `.keras`, compiled from the file, dynamic batch (and sequence length).

The relevance reference is independent of lrpc: TensorFlow's gradient × input of the same model, rebuilt
here from its Keras weights in float64 with the AttnLRP / CP-LRP modifications written as gradient edits:

    LayerNorm   y = (x − μ)·sg(rsqrt(var + ε))·γ + β                 (σ held fixed, the mean kept)
    GELU        y = x·sg(gelu(x)/x)                                    (identity rule)
    CP-LRP      A = sg(softmax(S))                                     (attention weights held fixed)
    AttnLRP     A·v = ½(A·sg(v) + sg(A)·v), q·kᵀ likewise              (the uniform rule)
    R_x = x ⊙ ∂y_t/∂x, t each sample's largest logit                   (LRP-0 elsewhere: --convention lxt)

(sg: tf.stop_gradient; the forward values are unchanged). The rebuilt forward is checked against Keras'.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tensorflow as tf

import keras_transformers as kt  # models/, on sys.path through tests/conftest.py
import lrpc
import oracle
from lrpc.cli import main
from lrpc.frontend.keras import from_keras_model

TOL = 1e-5


def _sg_half(a, b, product):
    """product(a, b) with each factor's gradient halved (AttnLRP's uniform rule as a gradient)."""
    return 0.5 * (product(a, tf.stop_gradient(b)) + product(tf.stop_gradient(a), b))


def _weights(model, layer: str) -> dict:
    return {v.path.rsplit("/", 1)[-1]: tf.constant(v.numpy(), tf.float64) for v in model.get_layer(layer).weights}


def _layer_norm(model, name, x):
    layer, w = model.get_layer(name), _weights(model, name)
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    y = (x - mean) * tf.stop_gradient(tf.math.rsqrt(var + layer.epsilon)) * w["gamma"]
    return y + w["beta"] if "beta" in w else y


def _dense(model, name, x, gelu=False):
    w = _weights(model, name)
    y = tf.linalg.matmul(x, w["kernel"]) + w.get("bias", 0.0)
    if not gelu:
        return y
    return y * tf.stop_gradient(tf.nn.gelu(y, approximate=False) / y)


def _causal(layer) -> bool:
    """Whether the (one) call of MultiHeadAttention `layer` in the model passed use_causal_mask=True."""
    return bool(layer._inbound_nodes[0].arguments.kwargs.get("use_causal_mask"))


def _attention(model, name, x, rule):
    layer = model.get_layer(name)
    sub = {"/".join(v.path.split("/")[-2:]): tf.constant(v.numpy(), tf.float64) for v in layer.weights}  # query/kernel

    def proj(part):
        y = tf.einsum("btd,dhk->bthk", x, sub[f"{part}/kernel"])
        return y + sub[f"{part}/bias"] if f"{part}/bias" in sub else y

    q, k, v = proj("query"), proj("key"), proj("value")
    scores_of = lambda a, b: tf.einsum("bthk,bshk->bhts", a, b)  # noqa: E731
    scores = (_sg_half(q, k, scores_of) if rule == "half" else scores_of(q, k)) / np.sqrt(layer._key_dim)
    if _causal(layer):
        t = tf.shape(x)[1]
        keep = tf.linalg.band_part(tf.ones((t, t), tf.bool), -1, 0)
        scores = tf.where(keep, scores, tf.constant(-1e9, tf.float64))
    a = tf.nn.softmax(scores, axis=-1)
    mix = lambda a_, v_: tf.einsum("bhts,bshk->bthk", a_, v_)  # noqa: E731
    o = _sg_half(a, v, mix) if rule == "half" else mix(tf.stop_gradient(a), v)
    y = tf.einsum("bthk,hkd->btd", o, sub["attention_output/kernel"])
    return y + sub["attention_output/bias"] if "attention_output/bias" in sub else y


def reference_forward(model, x, rule="gate-constant"):
    """The model's forward in float64 from its weights, with the relevance edits of the module docstring."""
    names = {layer.name for layer in model.layers}
    if "patch_embed" in names:
        w = _weights(model, "patch_embed")
        patch = model.get_layer("patch_embed").strides[0]
        x = tf.nn.conv2d(x, w["kernel"], patch, "VALID") + w.get("bias", 0.0)
        x = tf.reshape(x, (tf.shape(x)[0], -1, x.shape[-1])) + _weights(model, "pos_embed")["table"]
    k = 0
    while f"b{k}_ln1" in names:
        x = x + _attention(model, f"b{k}_mha", _layer_norm(model, f"b{k}_ln1", x), rule)
        h = _dense(model, f"b{k}_fc1", _layer_norm(model, f"b{k}_ln2", x), gelu=True)
        x = x + _dense(model, f"b{k}_fc2", h)
        k += 1
    x = _layer_norm(model, "ln_final", x)
    x = tf.reduce_mean(x, axis=1) if "pool" in names else x[:, 0]
    return _dense(model, "logits", x)


def reference_relevance(model, x, rule="gate-constant"):
    """x ⊙ ∂y_t/∂x through `reference_forward`, t = argmax y per sample; returns (relevance, logits)."""
    x = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = reference_forward(model, x, rule)
        picked = tf.reduce_sum(tf.gather(y, tf.argmax(y, axis=1), axis=1, batch_dims=1))
    return (x * tape.gradient(picked, x)).numpy(), y.numpy()


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def inputs(model, seq: int = 5, n: int = 3, seed: int = 0) -> np.ndarray:
    shape = [d if d is not None else seq for d in model.inputs[0].shape[1:]]
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def run(explained, x):
    sess = oracle.session(explained)
    logits, relevance = sess.run(["logits", "relevance"], {sess.get_inputs()[0].name: x})
    return logits, relevance


def compiled(tmp_path, model, composite="CPLRP", **kwargs):
    """`model` saved as .keras, then compiled from that file by lrpc (lxt convention)."""
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    return lrpc.compile(str(path), composite=composite, convention="lxt", **kwargs)


MODELS = {
    "encoder": lambda: kt.build("tiny_transformer"),
    "causal": lambda: kt.build("tiny_transformer_causal"),
    "first_token": lambda: kt.build("tiny_transformer_first"),
    "vit": lambda: kt.build("tiny_vit"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_equals_keras_and_cplrp_equals_tf_gradient(tmp_path, name):
    model = MODELS[name]()
    explained = compiled(tmp_path, model)
    x = inputs(model)
    logits, relevance = run(explained, x)
    expected = model.predict(x, verbose=0)
    assert np.abs(logits - expected).max() <= TOL * max(1.0, np.abs(expected).max())
    reference, ref_logits = reference_relevance(model, x)
    assert np.abs(ref_logits - expected).max() <= TOL  # the rebuilt forward is the Keras model
    assert relevance.shape == x.shape
    assert rel_l2(relevance, reference) <= TOL, rel_l2(relevance, reference)


@pytest.mark.parametrize("name", ["encoder", "causal"])
def test_attnlrp_equals_tf_gradient_with_halved_products(tmp_path, name):
    model = MODELS[name]()
    explained = compiled(tmp_path, model, composite="AttnLRP")
    x = inputs(model, seed=1)
    _, relevance = run(explained, x)
    reference, _ = reference_relevance(model, x, rule="half")
    assert rel_l2(relevance, reference) <= TOL, rel_l2(relevance, reference)
    assert rel_l2(reference_relevance(model, x)[0], reference) > 0.1  # the rules differ: the check has teeth


def test_one_file_two_sequence_lengths(tmp_path):
    model = kt.build("tiny_transformer_causal")
    explained = compiled(tmp_path, model)
    dims = explained.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param and dims[2].dim_value == 16  # batch and sequence dynamic
    for seq, n in ((4, 2), (9, 3)):
        x = inputs(model, seq=seq, n=n, seed=seq)
        logits, relevance = run(explained, x)
        assert np.abs(logits - model.predict(x, verbose=0)).max() <= TOL
        assert rel_l2(relevance, reference_relevance(model, x)[0]) <= TOL


@pytest.mark.parametrize(
    "kind, options",
    [
        ("transformer", {"composite": "CPLRP"}),
        ("vit", {"rule": "epsilon:eps=1e-12", "rule_map": ["product=gate-constant"]}),
    ],
)
def test_cplrp_conserves_without_biases(tmp_path, kind, options):
    """No bias, no β: every addend is an activation, the softmax is held, GELU is the identity rule, so under
    CP-LRP (ε = 1e-12) the relevance sums to the explained logit. The ViT's position embedding is a constant
    addend: the CPLRP composite lets it absorb its share (as LXT's gradient gives it); a plain rule with the
    same product rule leaves its unit's relevance with x, and the sum is the logit again."""
    model = (
        kt.build("tiny_transformer", causal=True, bias=False)
        if kind == "transformer"
        else kt.build("tiny_vit", bias=False)
    )
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    explained = lrpc.compile(str(path), **options)
    x = inputs(model, seq=7)
    logits, relevance = run(explained, x)
    total = relevance.reshape(len(x), -1).sum(1)
    gap = np.abs(total - logits.max(1)).max() / np.abs(logits.max(1)).max()
    assert gap <= 1e-4, (total, logits.max(1))


def test_cli_compiles_the_keras_file(tmp_path):
    model = kt.build("tiny_transformer")
    model.save(tmp_path / "t.keras")
    out = tmp_path / "t.onnx"
    assert main(["compile", str(tmp_path / "t.keras"), "-o", str(out)]) == 0
    explained = onnx.load(out)
    names = {n.name.split("/")[0] for n in explained.graph.node}
    assert {"b0_ln1", "b0_mha", "b0_fc1", "logits"} <= names
    x = inputs(model, seq=6)
    assert np.abs(run(explained, x)[0] - model.predict(x, verbose=0)).max() <= TOL  # AttnLRP by default


def test_attention_products_carry_the_keras_layer_name():
    """tf2onnx's einsum optimizer decomposes EinsumDense and q·kᵀ, A·v into unnamed MatMul/Gemm nodes; they
    are named in the MultiHeadAttention's scope (rule maps and --explain match `b0_mha*`)."""
    proto = from_keras_model(kt.build("tiny_transformer_causal"))
    products = [n.name for n in proto.graph.node if n.op_type in ("MatMul", "Gemm", "Softmax")]
    mha = [p for p in products if p.startswith("b0_mha/")]
    assert len(mha) == 7, products  # q, k, v, output projections, q·kᵀ, softmax, A·v
    assert {p.split("/")[1] for p in mha} >= {"query", "key", "value", "attention_output"}


def test_attention_over_two_axes_is_one_clear_error():
    from keras import Input, Model, layers

    inp = Input((4, 4, 8), name="grid")
    h = layers.MultiHeadAttention(2, 4, attention_axes=(1, 2), name="mha2d")(inp, inp)
    model = Model(inp, layers.Dense(3, name="logits")(layers.GlobalAveragePooling2D(name="gap")(h)))
    with pytest.raises(lrpc.LrpcError) as info:
        from_keras_model(model)
    message = str(info.value)
    assert "\n" not in message and "'mha2d'" in message and "attention_axes=(1, 2)" in message, message
    assert "Reshape" in message
