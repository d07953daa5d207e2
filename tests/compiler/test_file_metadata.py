"""What an explained file records (lrpc.* metadata_props), read back by `lrpc inspect` and the runtime;
the same model and options give byte-identical files."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

import onnx
import pytest

import lrpc
from lrpc.cli import main
from lrpc_runtime import Explainer, Preprocessing
from nets import small_cnn

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS_MODEL = ROOT / "models" / "digits_cnn.onnx"
SPEC = "resize=8,8;scale=1/255;mean=0.5;std=0.25;invert=1"


def metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def test_the_file_records_how_it_was_made():
    meta = metadata(lrpc.compile(DIGITS_MODEL, composite="EpsilonPlus", target=3, preprocess=SPEC))
    assert meta["lrpc.version"] == lrpc.__version__ and meta["lrpc.rule"] == "EpsilonPlus"
    assert meta["lrpc.target"] == "fixed:3" and meta["lrpc.convention"] == "lrpc"
    assert meta["lrpc.output"] == "probs" and meta["lrpc.classes"] == "10"
    assert meta["lrpc.source_sha256"] == hashlib.sha256(DIGITS_MODEL.read_bytes()).hexdigest()
    assert json.loads(meta["lrpc.options"]) == {"composite": "EpsilonPlus", "target": "3"}
    assert Preprocessing.from_json(meta["lrpc.preprocess"]) == Preprocessing.parse(SPEC)


def test_methods_and_inner_tensors():
    meta = metadata(lrpc.compile(small_cnn(), method="gradient"))
    assert meta["lrpc.method"] == "gradient" and "lrpc.preprocess" not in meta
    assert json.loads(meta["lrpc.options"]) == {"method": "gradient"}
    inner = metadata(lrpc.compile(small_cnn(), explain="g1:3"))
    assert "lrpc.output" not in inner and inner["lrpc.explained"] == "g1"
    # a model given in memory is hashed as serialized
    assert inner["lrpc.source_sha256"] == hashlib.sha256(small_cnn().SerializeToString(deterministic=True)).hexdigest()


def test_same_inputs_give_the_same_bytes_wherever_they_are(tmp_path):
    """No timestamps, no absolute paths: another folder, a relative path, another run — the same file."""
    copy = tmp_path / "elsewhere" / "model.onnx"
    copy.parent.mkdir()
    shutil.copy(DIGITS_MODEL, copy)
    first = tmp_path / "a.onnx"
    assert main(["compile", str(DIGITS_MODEL), "--preprocess", SPEC, "--rule-map", "first=flat", "-o", str(first)]) == 0
    cwd = os.getcwd()
    try:
        os.chdir(copy.parent)
        second = lrpc.compile("model.onnx", preprocess=SPEC, rule_map=["first=flat"]).SerializeToString()
    finally:
        os.chdir(cwd)
    assert first.read_bytes() == second


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mean=0.1,0.2,0.3", "3 values for the 1-channel input 'input'"),
        ("layout=NHWC", "8 channels in layout NHWC"),
        ("resize=224", "height and width"),
    ],
)
def test_a_bad_preprocessing_spec_is_refused_at_compile_time(spec, message, tmp_path, capsys):
    with pytest.raises(lrpc.LrpcError, match=message):
        lrpc.compile(DIGITS_MODEL, preprocess=spec)
    assert main(["compile", str(DIGITS_MODEL), "--preprocess", spec, "-o", str(tmp_path / "e.onnx")]) == 2
    assert capsys.readouterr().err.startswith("lrpc: error: --preprocess: ") and not list(tmp_path.iterdir())


def test_inspect_and_the_runtime_read_it_back(tmp_path, capsys):
    path = tmp_path / "e.onnx"
    lrpc.compile(DIGITS_MODEL, composite="EpsilonPlus", preprocess=SPEC, output=path)
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "preprocess     resize 8×8, scale 0.00392157, mean 0.5, std 0.25, invert" in text
    assert f"source_sha256  {hashlib.sha256(DIGITS_MODEL.read_bytes()).hexdigest()}" in text
    explainer = Explainer(path)
    assert Preprocessing.from_json(explainer.metadata.preprocess) == Preprocessing.parse(SPEC)
    assert explainer.metadata.output == "probs" and explainer.input_shapes == {"input": ("batch", 1, 8, 8)}
    assert explainer.metadata.extra["lrpc.convention"] == "lrpc"


def test_each_file_key_is_spelled_once():
    """The lrpc.* metadata keys are lrpc_runtime.metadata's KEY_* constants: no other source spells one out
    (a key mistyped in one reader would read as absent), and every key a compile writes is declared."""
    import ast

    from lrpc_runtime import metadata as declared

    keys = {v for k, v in vars(declared).items() if k.startswith("KEY_")}
    spelled = [
        f"{path.relative_to(ROOT)}:{node.lineno} spells {node.value!r}"
        for folder in ("compiler", "runtime")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "runtime" / "metadata.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in keys
    ]
    assert not spelled, "import the KEY_* constant from lrpc_runtime.metadata instead:\n" + "\n".join(spelled)
    written = metadata(lrpc.compile(DIGITS_MODEL, target="input", preprocess=SPEC, position=None))
    assert set(written) <= keys, set(written) - keys
    assert len(keys) >= 14
