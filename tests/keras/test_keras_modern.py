"""The Keras front end on modern convnets (compiler/frontend/keras_graph.py, keras.py): grouped Conv2D, exact
gelu, LayerNormalization, hard-swish, swish and squeeze-excitation convert to plain ONNX whose forward equals
Keras'; keras.applications MobileNetV3, EfficientNet(V2) and ConvNeXt do too; Keras layer names survive where
TensorFlow's scopes are ambiguous; a file converts to the same bytes in any process; an op tf2onnx cannot
convert is one error line naming it and its layer; BatchNorm statistics reset from one batch."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
from keras import layers

import keras_models  # models/, on sys.path through tests/conftest.py
import lrpc
import oracle
from lrpc.frontend.keras import from_keras_model, load

ROOT = Path(__file__).resolve().parents[2]


def modern_blocks() -> keras.Model:
    """Every layer the modern families add, small: 8×8×6 → 5 logits."""
    inp = keras.Input((8, 8, 6), name="image")
    x = layers.Conv2D(12, 3, padding="same", groups=3, name="grouped")(inp)
    x = layers.Conv2D(12, 3, padding="same", groups=12, name="grouped_dw")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="ln")(x)
    x = layers.Activation("gelu", name="gelu")(x)  # Keras 3: exact (erf) gelu
    x = layers.Conv2D(12, 1, name="pw")(x)
    x = layers.Activation("hard_swish", name="hswish")(x)
    x = layers.Activation("swish", name="swish")(x)
    se = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    se = layers.Conv2D(12, 1, activation="hard_sigmoid", name="se_conv")(se)
    x = layers.Multiply(name="se_gate")([x, se])
    x = layers.LayerNormalization(center=False, name="ln_nobeta")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(5, name="logits")(x), name="modern_blocks")


def rel_gap(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def keras_forward_matches(model, proto, x, tol):
    sess = oracle.session(proto)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    gap = rel_gap(got, model(x, training=False).numpy())
    assert gap <= tol, f"ONNX forward differs from Keras by {gap:.2e} (relative to max |y|)"


def producers(proto):
    return {out: node for node in proto.graph.node for out in node.output}


def test_modern_layers_convert_to_plain_onnx():
    model = keras_models.seed_weights(modern_blocks())
    proto = from_keras_model(model)
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"PartitionedCall", "StatefulPartitionedCall", "Erfc"}, ops
    groups = {
        n.name.split("/")[0]: a.i
        for n in proto.graph.node
        if n.op_type == "Conv"
        for a in n.attribute
        if a.name == "group"
    }
    assert groups["grouped"] == 3 and groups["grouped_dw"] == 12
    assert any(n.op_type == "Erf" and n.name.startswith("gelu/") for n in proto.graph.node)
    made = producers(proto)
    centred = {
        n.name.split("/")[0]
        for n in proto.graph.node
        if n.op_type == "Sub"
        and (m := made.get(n.input[1])) is not None
        and m.op_type == "ReduceMean"
        and m.input[0] == n.input[0]
    }
    assert centred == {"ln", "ln_nobeta"}  # each LayerNorm centres x − mean(x) once
    x = np.random.default_rng(3).standard_normal((4, 8, 8, 6)).astype(np.float32)
    keras_forward_matches(model, proto, x, 1e-5)


def test_modern_layers_from_a_savedmodel_folder(tmp_path):
    """The SavedModel route (variables frozen by tf2onnx) gets the same rewrites and conversion."""
    model = keras_models.seed_weights(modern_blocks())
    model.export(str(tmp_path / "sm"), verbose=False)
    proto = load(str(tmp_path / "sm"))
    onnx.checker.check_model(proto, full_check=True)
    assert not {n.op_type for n in proto.graph.node} & {"PartitionedCall", "StatefulPartitionedCall", "Erfc"}
    x = np.random.default_rng(5).standard_normal((3, 8, 8, 6)).astype(np.float32)
    keras_forward_matches(model, proto, x, 1e-5)


def test_modern_blocks_compile_and_explain():
    model = keras_models.seed_weights(modern_blocks())
    explained = lrpc.compile(from_keras_model(model), rule="epsilon")
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 6)).astype(np.float32)
    relevance = oracle.session(explained).run(["relevance"], {"image": x})[0]
    assert relevance.shape == x.shape and np.isfinite(relevance).all() and np.abs(relevance).sum() > 0


class Log1p(layers.Layer):
    """A layer whose TensorFlow op (Log1p) tf2onnx 1.17 has no converter for."""

    def call(self, x):
        return keras.ops.log1p(x)


def log1p_model() -> keras.Model:
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, layers.Dense(2, name="fc")(Log1p(name="soft_log")(layers.ReLU(name="relu")(inp))))


def test_unconvertible_op_is_named_with_its_layer():
    with pytest.raises(lrpc.LrpcError) as info:
        from_keras_model(log1p_model())
    message = str(info.value)
    assert "\n" not in message
    assert "TensorFlow op Log1p" in message and "Keras layer 'soft_log'" in message, message


CLI = """
import sys
from lrpc.cli import main
from lrpc.frontend.keras import _import_tensorflow
_, keras, _ = _import_tensorflow("test")  # TensorFlow imported as lrpc imports it, before the class is defined

@keras.saving.register_keras_serializable("lrpc_tests")
class Log1p(keras.layers.Layer):
    def call(self, x):
        return keras.ops.log1p(x)

sys.exit(main(["compile", sys.argv[1], "-o", sys.argv[2]]))
"""


def test_cli_unconvertible_op_one_line_without_tf2onnx_noise(tmp_path):
    """In a process of its own, as a user runs it (pytest would capture tf2onnx's log records)."""
    keras.saving.register_keras_serializable("lrpc_tests")(Log1p)
    log1p_model().save(tmp_path / "log1p.keras")
    out = tmp_path / "out.onnx"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}  # lrpc quiets TensorFlow itself
    run = subprocess.run(
        [sys.executable, "-c", CLI, str(tmp_path / "log1p.keras"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr[-3000:]
    assert len(err) == 1 and err[0].startswith("lrpc: error: ") and "Log1p" in err[0] and "soft_log" in err[0], err
    assert not out.exists()


def test_layer_names_follow_scopes_not_spelling():
    """Layers `se` and `se_1` side by side: TensorFlow traces `se` as scope `se_1`; the nodes keep their
    own layer's name (the spelling alone would give `se`'s nodes to `se_1`)."""
    inp = keras.Input((4, 4, 3), name="image")
    a = layers.Conv2D(2, 1, name="se")(inp)
    b = layers.Conv2D(5, 1, name="se_1")(a)
    model = keras_models.seed_weights(keras.Model(inp, layers.Dense(2, name="fc")(layers.Flatten(name="flat")(b))))
    proto = from_keras_model(model)
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    convs = {n.name.split("/")[0]: weights[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"}
    assert convs == {"se": [2, 3, 1, 1], "se_1": [5, 2, 1, 1]}, convs


def test_reset_batchnorm_sets_one_batch_statistics():
    inp = keras.Input((5, 5, 3))
    c1 = layers.Conv2D(4, 3, name="c1")(inp)
    b1 = layers.BatchNormalization(name="b1")(c1)
    r = layers.Dropout(0.5, name="drop")(layers.ReLU()(b1))
    b2 = layers.BatchNormalization(name="b2")(layers.Conv2D(3, 1, name="c2")(r))
    model = keras.Model(inp, b2)
    x = keras_models.images((5, 5, 3), seed=1, n=16)
    keras_models.reset_batchnorm(model, x)
    for name, before in (("b1", "c1"), ("b2", "c2")):
        z = keras.Model(inp, model.get_layer(before).output)(x).numpy()
        bn = model.get_layer(name)
        np.testing.assert_allclose(bn.moving_mean.numpy(), z.mean((0, 1, 2)), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), z.var((0, 1, 2)), rtol=1e-3)
        assert bn.momentum == 0.99
    assert model.get_layer("drop").rate == 0.5
    y = model(x, training=False).numpy()
    np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-3)  # b2's output normalized on this batch


APPS = [
    "mobilenet_v3_small",
    *[
        pytest.param(n, marks=pytest.mark.slow)
        for n in ("mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_b0", "convnext_tiny")
    ],
]


@pytest.mark.parametrize("name", APPS)
def test_application_converts_and_matches_keras(name):
    model = keras_models.application(name)
    proto = from_keras_model(model)
    onnx.checker.check_model(proto, full_check=True)
    # 1e-4: float32 round-off through 50–150 layers (measured ≤ 1.3e-5 at 32×32 on these seeds)
    keras_forward_matches(model, proto, keras_models.images((32, 32, 3), seed=5, n=4), 1e-4)
    scopes = {n.name.split("/")[0] for n in proto.graph.node if "/" in n.name}
    layer_names = {layer.name for layer in model.layers}
    assert len(scopes & layer_names) > 0.5 * len(scopes), sorted(scopes - layer_names)[:10]


CONVERT = """
import hashlib, sys
from lrpc.frontend.keras import load
for path in sys.argv[1:]:
    print(hashlib.sha256(load(path).SerializeToString()).hexdigest())
"""


@pytest.mark.slow
def test_same_file_same_bytes_in_any_process(tmp_path):
    """tf2onnx walks sets of names (string-hash order) and of nodes (address order): ResNet50 converted to
    a different node order and MobileNetV3Small to a different graph in nearly every process before."""
    paths = []
    for name in ("resnet50", "mobilenet_v3_small"):
        paths.append(str(tmp_path / f"{name}.keras"))
        keras_models.application(name).save(paths[-1])
    digests = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "TF_CPP_MIN_LOG_LEVEL": "2"}
        run = subprocess.run(
            [sys.executable, "-c", CONVERT, *paths], env=env, capture_output=True, text=True, cwd=ROOT, timeout=600
        )
        assert run.returncode == 0, run.stderr[-2000:]
        digests.append(run.stdout.split())
    here = [hashlib.sha256(load(p).SerializeToString()).hexdigest() for p in paths]
    assert digests[0] == digests[1] == here
