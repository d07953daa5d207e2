"""The CLI: a working compile, help with examples, and clear errors with exit status 2."""

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import lrpc
from lrpc.cli import main
from nets import make_model, small_cnn, tensor


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lrpc.cli", *map(str, args)], capture_output=True, text=True)


def test_compile_writes_a_runnable_file(tmp_path):
    model, out = tmp_path / "m.onnx", tmp_path / "explained.onnx"
    onnx.save(small_cnn(), model)
    result = cli("compile", model, "--rule", "alphabeta:alpha=2,beta=1", "--target", "2", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "alphabeta:alpha=2,beta=1" in result.stdout
    probs, rel = ort.InferenceSession(str(out)).run(None, {"x": np.ones((3, 2, 8, 8), np.float32)})
    assert probs.shape == (3, 5) and rel.shape == (3, 2, 8, 8)


def test_help_shows_examples(capsys):
    for argv in (["--help"], ["compile", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert "lrpc compile model.onnx --rule alpha1beta0 -o explained.onnx" in text
    assert "zbox:low=REQUIRED,high=REQUIRED" in text


def unknown_op_model():
    w = np.ones((4, 3), np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Erf", ["h"], ["e"], name="odd_activation"),
        helper.make_node("Gemm", ["e", "w2"], ["y"], name="head"),
    ]
    return make_model(
        nodes, [tensor("x", ["n", 4])], [tensor("y", ["n", 2])], {"w": w, "w2": np.ones((3, 2), np.float32)}
    )


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("unknown_op", [], "no relevance rule for node 'odd_activation' (Erf); supported ops: "),
        ("not_onnx", [], "not an ONNX model"),
        ("missing", [], "no such file"),
        ("good", ["--rule", "epsilonn"], "unknown rule 'epsilonn'; known rules: "),
        ("good", ["--rule", "epsilon:epsilon=3"], "rule 'epsilon' has no parameter 'epsilon' (its parameters: eps)"),
        ("good", ["--rule", "epsilon:eps=abc"], "needs a number"),
        ("good", ["--rule", "zbox:low=0"], "needs high"),
        ("good", ["--rule", "alphabeta:alpha=3,beta=1"], "alpha − beta = 1"),
        ("good", ["--target", "7"], "'logits' has 5 classes (0–4)"),
        ("good", ["--target", "first"], "--target takes max, all, mask, input or a unit index"),
        ("good", ["--opset", "12"], "lrpc does not downgrade models"),
        ("good", ["--opset", "30"], "lrpc emits opsets 16–26"),
    ],
)
def test_bad_input_gives_a_clear_error_and_writes_nothing(tmp_path, setup, args, message):
    model, out = tmp_path / "m.onnx", tmp_path / "explained.onnx"
    if setup == "unknown_op":
        onnx.save(unknown_op_model(), model)
    elif setup == "not_onnx":
        model.write_text("this is a text file, not a model\n")
    elif setup == "good":
        onnx.save(small_cnn(), model)
    result = cli("compile", model, "-o", out, *args)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert result.stderr.startswith("lrpc: error: ") and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m.onnx"] if setup != "missing" else [])


def test_unknown_op_error_lists_supported_ops():
    with pytest.raises(lrpc.LrpcError) as error:
        lrpc.compile(unknown_op_model())
    for op in ("Conv", "Gemm", "MatMul", "MaxPool", "Relu", "Reshape", "Transpose"):
        assert op in str(error.value)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "explained.onnx"

    def broken_save(proto, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(lrpc.LrpcError, match="cannot write .*disk full; nothing was written"):
        lrpc.compile(small_cnn(), output=out)
    assert list(tmp_path.iterdir()) == []


def two_unknown_ops_model():
    w = np.ones((4, 4), np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Sin", ["h"], ["s"], name="wave"),
        helper.make_node("Gemm", ["s", "w"], ["g"], name="mid"),
        helper.make_node("Cos", ["g"], ["c"], name="other_wave"),
        helper.make_node("Gemm", ["c", "w2"], ["y"], name="head"),
    ]
    return make_model(
        nodes, [tensor("x", ["n", 4])], [tensor("y", ["n", 2])], {"w": w, "w2": np.ones((4, 2), np.float32)}
    )


def test_every_refused_node_is_named_with_a_count():
    with pytest.raises(lrpc.LrpcError) as error:
        lrpc.compile(two_unknown_ops_model())
    message = str(error.value)
    assert message.startswith("2 nodes cannot be explained: ")
    assert "'wave' (Sin)" in message and "'other_wave' (Cos)" in message


def test_inspect_labels_refused_nodes_and_exits_2(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(two_unknown_ops_model(), model)
    result = cli("inspect", model)
    assert result.returncode == 2, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert "REFUSED: no relevance rule" in rows["wave"] and "REFUSED" in rows["other_wave"]
    assert "REFUSED" not in rows["fc"] and "REFUSED" not in rows["head"]
    assert "2 nodes lrpc cannot explain: 'wave' (Sin), 'other_wave' (Cos)" in result.stdout
    assert cli("inspect", model, "--method", "gradient").returncode == 2


def test_the_source_model_is_never_replaced_unless_asked(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(small_cnn(), model)
    source = model.read_bytes()
    for fmt in ("onnx", "savedmodel"):  # the source check comes before --format savedmodel needs TensorFlow
        result = cli("compile", model, "-o", model, "--format", fmt)
        assert result.returncode == 2 and "is the source model" in result.stderr and "--overwrite" in result.stderr
        assert result.stderr.count("\n") == 1 and model.read_bytes() == source
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    result = cli("compile", model, "-o", model, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert any(p.key == "lrpc.relevance" for p in onnx.load(model).metadata_props)


def test_an_existing_output_is_replaced_only_when_lrpc_wrote_it(tmp_path):
    """Rebuilding an explained file needs no flag; any other file (a model, notes) needs --overwrite."""
    model, other, explained = tmp_path / "m.onnx", tmp_path / "other.onnx", tmp_path / "e.onnx"
    onnx.save(small_cnn(), model)
    onnx.save(unknown_op_model(), other)
    (tmp_path / "notes.txt").write_text("mine\n")
    for path in (other, tmp_path / "notes.txt"):
        before = path.read_bytes()
        result = cli("compile", model, "-o", path)
        assert result.returncode == 2 and "exists and is not an explained file" in result.stderr
        assert path.read_bytes() == before
    assert cli("compile", model, "--rule", "epsilon", "-o", explained).returncode == 0
    first = explained.read_bytes()
    assert cli("compile", model, "--rule", "zplus", "-o", explained).returncode == 0
    assert explained.read_bytes() != first
    assert cli("compile", model, "-o", other, "--overwrite").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx", "m.onnx", "notes.txt", "other.onnx"]
    (tmp_path / "folder").mkdir()
    result = cli("compile", model, "-o", tmp_path / "folder", "--overwrite")
    assert result.returncode == 2 and "is a folder; give a file path" in result.stderr
