"""The Keras frontend from the user's side: files (.keras, .h5, a SavedModel folder) through the CLI and the
API, Keras layer names in rule maps, --explain and inspect, channels-last relevance, same bytes twice."""

from __future__ import annotations

import functools

import keras
import numpy as np
import onnx
import pytest
from keras import layers

import keras_models  # models/, on sys.path through tests/conftest.py
import lrpc
import oracle
from lrpc.cli import main
from lrpc.frontend.keras import from_keras_model


@functools.lru_cache(maxsize=None)
def saved(tmp_root, name, fmt):
    model = keras_models.build(name)
    path = f"{tmp_root}/{name}.{fmt}"
    if fmt == "savedmodel":
        model.export(path, verbose=False)
    else:
        model.save(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("keras"))


def test_cli_compiles_keras_h5_and_savedmodel_alike(root, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype(np.float32)
    results = {}
    for fmt in ("keras", "h5", "savedmodel"):
        out = tmp_path / f"{fmt}.onnx"
        assert main(["compile", saved(root, "zoo_2d", fmt), "--rule", "epsilon", "-o", str(out)]) == 0
        sess = oracle.session(onnx.load(out))
        results[fmt] = sess.run(None, {sess.get_inputs()[0].name: x})
        assert results[fmt][-1].shape == x.shape  # relevance: the channels-last input's shape
    for fmt in ("h5", "savedmodel"):
        for a, b in zip(results[fmt], results["keras"]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_relevance_is_channels_last():
    """Only input channel 1 reaches the output: all relevance lies in x[..., 1]."""
    inp = keras.Input((6, 6, 3), name="image")
    conv = layers.Conv2D(4, 3, name="conv")
    out = layers.Dense(2, name="logits")(layers.GlobalAveragePooling2D(name="gap")(layers.ReLU()(conv(inp))))
    model = keras_models.seed_weights(keras.Model(inp, out))
    kernel, bias = conv.get_weights()
    kernel[:, :, [0, 2], :] = 0.0
    conv.set_weights([kernel, bias])
    sess = oracle.session(lrpc.compile(from_keras_model(model), rule="epsilon"))
    x = np.random.default_rng(1).uniform(0.5, 1.5, (2, 6, 6, 3)).astype(np.float32)
    R = sess.run(["relevance"], {"image": x})[0]
    assert R.shape == x.shape
    assert np.abs(R[..., 1]).sum() > 0 and np.abs(R[..., [0, 2]]).max() == 0.0


def test_layer_names_are_keras_names():
    proto = from_keras_model(keras_models.build("zoo_2d"))
    scopes = {n.name.split("/")[0] for n in proto.graph.node if "/" in n.name}
    assert {"conv_a", "bn_a", "depthwise", "separable", "deconv", "fc", "logits"} <= scopes
    assert not any(s.endswith("_1") for s in scopes), scopes


def test_rule_map_and_explain_take_keras_layer_names(root):
    path = saved(root, "zoo_2d", "keras")
    p = lrpc.api.plan(path, composite="EpsilonPlus", rule_map=["depthwise=flat", "conv_a=w2"])
    rules = {node.name: rule.spec for node, rule in p.assigned.items()}
    assert [n for n, r in rules.items() if r == "flat"] == [n for n in rules if n.startswith("depthwise/")]
    assert [n for n, r in rules.items() if r == "w2"] == [n for n in rules if n.startswith("conv_a/")]
    with pytest.raises(lrpc.LrpcError, match="no_such_layer"):
        lrpc.api.plan(path, rule_map=["no_such_layer=flat"])
    p = lrpc.api.plan(saved(root, "autoencoder", "keras"), explain="latent:3")
    assert p.scores.name.startswith("latent/") and p.target.spec.endswith("3")


def test_inspect_shows_keras_names(root, capsys):
    assert main(["inspect", saved(root, "autoencoder", "keras"), "--explain", "latent:3"]) == 0
    text = capsys.readouterr().out
    assert "latent/" in text and "deconv4/" in text and "_1/" not in text


def test_same_model_same_bytes():
    model = keras_models.build("zoo_1d")
    assert from_keras_model(model).SerializeToString() == from_keras_model(model).SerializeToString()


def test_bench_times_a_keras_file_against_its_converted_forward(root):
    from lrpc.bench import bench

    result = bench(saved(root, "zoo_2d", "keras"), repeats=2, warmup=1, memory=False, rule="epsilon")
    assert result.model.endswith("zoo_2d.keras")
    assert result.batches[0].forward.median_ms > 0 and result.batches[0].explained.median_ms > 0
