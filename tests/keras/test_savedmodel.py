"""`lrpc compile --format savedmodel` against the explained ONNX file run by onnxruntime.

- Models × methods: every test model (hand-built, VGG-style, the Keras/iNNvestigate fixtures, the digits
  CNN, the torch exports in tests/fixtures/torch) is compiled with rules, composites, gradient methods and
  target modes; the SavedModel, saved and loaded back, is called through `serving_default` at batch 1 and 3
  (one export: the batch is dynamic) and every output must equal onnxruntime's: max|TF − ORT| ≤ 1e-4·max|ORT|.
  Where float32 itself is unreliable (LRP on residual nets with flat/w², ε on SELU: see
  tests/compiler/test_architectures.py), a larger gap passes only if TF is no further from the graph's own
  float64 result than onnxruntime is.
- Ops: each table entry's attribute variants on single-node graphs (pads, groups, dilations, ceil mode,
  MaxPool's indices and ties, Resize modes, Pad modes, …), traced without saving, against onnxruntime.
- Errors: an op outside the table, or an attribute variant it lacks, is an LrpcError naming the node and
  op (CLI exit 2) and leaves no folder behind; without TensorFlow the CLI says what to install.

LRPC_SAVEDMODEL_GAPS=FILE writes the worst gap per model and case as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from onnx import TensorProto, helper

import lrpc
from lrpc.cli import main
from lrpc.errors import LrpcError
from lrpc.verify.float64 import run_double
from lrpc.savedmodel import export_savedmodel

import nets  # noqa: E402  (tests/compiler, on sys.path through tests/conftest.py)
import vgg  # noqa: E402  (models/)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
TOL = 1e-4
GAPS: dict = {}

MODELS = {
    "small_cnn": nets.small_cnn,
    "small_cnn_nobias": lambda: nets.small_cnn(bias=False, softmax=False),
    "small_vgg": vgg.small_vgg,
    "digits_cnn": lambda: str(ROOT / "models" / "digits_cnn.onnx"),
    **{
        f"{folder}/{name}": (lambda p=FIXTURES / folder / f"{name}.onnx": str(p))
        for folder, name in [
            ("innvestigate", "cnn"),
            ("innvestigate", "cnn_bn"),
            ("keras", "avgpool_same_odd"),
            ("keras", "bn_first"),
            ("keras", "cnn_avgpool_bn"),
            ("keras", "cnn_avgpool_bn_export"),
            ("keras", "cnn_avgpool_bn_softmax"),
            ("keras", "dense_bn"),
            ("torch", "tiny_resnet_16"),
            ("torch", "tiny_bottleneck"),
            ("torch", "small_unet_8"),
            ("torch", "autoencoder"),
        ]
    },
}

BOX = "low=-1,high=1"  # inputs are drawn from [-1, 1]
FULL = [dict(rule=r) for r in ["epsilon", "zplus", "alpha2beta1", "gamma", "flat", "w2", f"zbox:{BOX}"]] + [
    dict(composite="EpsilonPlusFlat"),
    dict(composite=f"EpsilonGammaBox:{BOX}"),
    dict(method="gradient"),
    dict(method="inputxgradient"),
    dict(method="guidedbackprop"),
    dict(method="integratedgradients:steps=3,baseline_input=1"),
    dict(method="smoothgrad:samples=3,noise_input=1"),
    dict(rule="epsilon", target="1"),
    dict(rule="epsilon", target="input"),
    dict(rule="zplus", target="mask"),
]
CORE = [
    dict(composite=f"EpsilonGammaBox:{BOX}"),
    dict(rule="alpha2beta1", target="input"),
    dict(method="smoothgrad:samples=2,noise_input=1"),
]
AUTOENCODER = [
    dict(output_name="reconstruction", target="all", rule="epsilon"),
    dict(output_name="reconstruction", target="mask", rule="zplus"),
    dict(explain="latent:3", rule="epsilon"),
]
# The strided stem of tiny_bottleneck cannot be inverted for stacked path inputs (lrpc refuses to compile it).
NOT_COMPILED = {("torch/tiny_bottleneck", "integratedgradients"), ("torch/tiny_bottleneck", "smoothgrad")}


def _id(case: dict) -> str:
    return ",".join(f"{v}" for v in case.values())


def _matrix():
    fast = [("small_cnn", c) for c in FULL] + [(m, c) for m in MODELS for c in CORE if m != "small_cnn"]
    fast += [("torch/autoencoder", c) for c in AUTOENCODER]
    slow = [(m, c) for m in MODELS for c in FULL if m != "small_cnn" and c not in CORE]
    cases = [pytest.param(m, c, id=f"{m}-{_id(c)}") for m, c in fast]
    cases += [pytest.param(m, c, id=f"{m}-{_id(c)}", marks=pytest.mark.slow) for m, c in slow]
    return [p for p in cases if (p.values[0], p.values[1].get("method", "").split(":")[0]) not in NOT_COMPILED]


def feeds_for(session: ort.InferenceSession, proto: onnx.ModelProto, batch: int, seed: int) -> dict:
    """Inputs at `batch`: x uniform in [-1, 1], a valid class per sample for `target`, a 0/1 mask."""
    rng = np.random.default_rng(seed)
    classes = int({p.key: p.value for p in proto.metadata_props}["lrpc.classes"])
    feeds = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in value.shape]
        if value.name == "noise":
            shape[1] = batch
        if value.name == "target":
            feeds["target"] = rng.integers(0, classes, batch).astype(np.int64)
        elif value.name == "mask":
            feeds["mask"] = (rng.random(shape) < 0.5).astype(np.float32)
        else:
            feeds[value.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def compare(proto, session, serve, names, feeds, key) -> None:
    """Every output of the SavedModel against onnxruntime's (see the module docstring for the criterion)."""
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    got = serve(**{names["inputs"][k]: tf.constant(v) for k, v in feeds.items()})
    assert set(got) == set(names["outputs"].values())
    for name, expected in want.items():
        actual = got[names["outputs"][name]].numpy()
        assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
        scale = max(float(np.abs(expected).max()), 1e-30)
        gap = float(np.abs(actual.astype(np.float64) - expected).max()) / scale
        GAPS[key] = max(GAPS.get(key, 0.0), gap)
        if gap > TOL:
            exact = run_double(proto, feeds, [name])[name]
            ort_error = float(np.abs(expected - exact).max()) / scale
            tf_error = float(np.abs(actual - exact).max()) / scale
            assert tf_error <= max(2 * ort_error, TOL), (
                f"{name}: TF − ORT {gap:.2e}; against float64: TF {tf_error:.2e}, onnxruntime {ort_error:.2e}"
            )


@pytest.mark.parametrize(("model", "case"), _matrix())
def test_savedmodel_equals_the_onnx_file(model, case, tmp_path):
    proto = lrpc.compile(MODELS[model](), **case)
    names = export_savedmodel(proto, tmp_path / "sm")
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert serve.structured_input_signature[1][names["inputs"][proto.graph.input[0].name]].shape[0] is None
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        compare(proto, session, serve, names, feeds_for(session, proto, batch, seed=batch), f"{model} {_id(case)}")


@pytest.fixture(scope="module", autouse=True)
def _write_gaps():
    yield
    if os.environ.get("LRPC_SAVEDMODEL_GAPS"):
        with open(os.environ["LRPC_SAVEDMODEL_GAPS"], "w", encoding="utf-8") as f:
            json.dump(dict(sorted(GAPS.items())), f, indent=1)


# ---------------------------------------------------------------------------------------------------------
# the signature, the CLI, errors, atomic writes
# ---------------------------------------------------------------------------------------------------------


def test_signature_names_and_metadata(tmp_path):
    proto = lrpc.compile(nets.small_cnn(), rule="epsilon", target="input")
    export_savedmodel(proto, tmp_path / "sm")
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    inputs = serve.structured_input_signature[1]
    assert sorted(inputs) == ["target", "x"] and inputs["x"].shape.as_list() == [None, 2, 8, 8]
    assert inputs["target"].dtype == tf.int64 and inputs["target"].shape.as_list() == [None]
    assert sorted(serve.structured_outputs) == ["probs", "relevance"]
    record = json.loads((tmp_path / "sm" / "assets.extra" / "lrpc.json").read_text())
    assert record["metadata"]["lrpc.rule"] == "epsilon:eps=1e-06" and record["names"]["outputs"]["probs"] == "probs"


def test_onnx_names_become_signature_keys(tmp_path):
    proto = lrpc.compile(str(FIXTURES / "keras" / "cnn_avgpool_bn_export.onnx"), rule="epsilon")
    names = export_savedmodel(proto, tmp_path / "sm")
    assert names["outputs"] == {"Identity:0": "Identity_0", "relevance": "relevance"}


def test_cli_writes_a_savedmodel_and_replaces_an_old_one(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(nets.small_cnn(), str(model))
    out = tmp_path / "explained"
    for rule in ("epsilon", "zplus"):  # the second run replaces the first SavedModel
        assert main(["compile", str(model), "--rule", rule, "--format", "savedmodel", "-o", str(out)]) == 0
    assert "TensorFlow SavedModel" in capsys.readouterr().out
    assert json.loads((out / "assets.extra" / "lrpc.json").read_text())["metadata"]["lrpc.rule"] == "zplus"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explained", "m.onnx"]  # no temporary folders left


def test_cli_refuses_to_replace_a_folder_that_is_not_a_savedmodel(tmp_path, capsys):
    model, out = tmp_path / "m.onnx", tmp_path / "photos"
    onnx.save(nets.small_cnn(), str(model))
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["compile", str(model), "--format", "savedmodel", "-o", str(out)]) == 2
    assert "is not a SavedModel folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def _explained_with(node: onnx.NodeProto, out_type=TensorProto.FLOAT) -> onnx.ModelProto:
    return nets.make_model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), node],
        [nets.tensor("x", ["batch", 4])],
        [nets.tensor("y", ["batch", 4], out_type)],
        {},
    )


def test_an_op_outside_the_table_is_a_user_error_naming_it(tmp_path, capsys):
    model = _explained_with(helper.make_node("Cos", ["r"], ["y"], name="angle"))
    with pytest.raises(
        LrpcError, match=r"'angle' \(Cos\): the TensorFlow export has no function for Cos.*--format onnx"
    ):
        export_savedmodel(model, tmp_path / "sm")
    assert not (tmp_path / "sm").exists() and list(tmp_path.iterdir()) == []


def test_an_attribute_variant_outside_the_table_is_a_user_error_naming_it(tmp_path):
    node = helper.make_node("ArgMax", ["r"], ["y"], name="pick", axis=1, select_last_index=1)
    model = nets.make_model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), node],
        [nets.tensor("x", ["batch", 4])],
        [nets.tensor("y", ["batch", 1], TensorProto.INT64)],
        {},
    )
    with pytest.raises(LrpcError, match=r"'pick' \(ArgMax\).*select_last_index=1 is not implemented"):
        export_savedmodel(model, tmp_path / "sm")
    assert list(tmp_path.iterdir()) == []


def test_without_tensorflow_the_cli_says_what_to_install(tmp_path, capsys, monkeypatch):
    model = tmp_path / "m.onnx"
    onnx.save(nets.small_cnn(), str(model))
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    assert main(["compile", str(model), "--format", "savedmodel", "-o", str(tmp_path / "sm")]) == 2
    assert 'pip install "lrpc[keras]"' in capsys.readouterr().err
    assert not (tmp_path / "sm").exists()


def test_seeded_smoothgrad_draws_its_noise_in_tensorflow(tmp_path):
    """RandomNormalLike runs as TF's seeded generator: other numbers than onnxruntime's (ONNX fixes none),
    so only the noise-free parts compare: the model output, and a finite relevance of the input's shape."""
    proto = lrpc.compile(nets.small_cnn(), method="smoothgrad:samples=4,noise=0.1")
    names = export_savedmodel(proto, tmp_path / "sm")
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 2, 8, 8)).astype(np.float32)
    got = serve(x=tf.constant(x))
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got[names["outputs"]["probs"]].numpy(), want[0], rtol=1e-5, atol=1e-7)
    relevance = got["relevance"].numpy()
    assert relevance.shape == x.shape and np.all(np.isfinite(relevance)) and np.abs(relevance).max() > 0
