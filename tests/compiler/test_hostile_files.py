"""Broken and hostile model files (issue 10): each gets one clear `LrpcError` (exit status 2 from the
CLI), and no output file is left behind; external weight data works in both directions and may not
point outside the model's folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lrpc
from lrpc import emit
from nets import make_model, small_cnn, tensor

W = np.random.default_rng(0).standard_normal((4, 300)).astype(np.float32)  # 4.8 kB: stored as external data


def dense(weights_as_input=False):
    init = {} if weights_as_input else {"w": W}
    inputs = [tensor("x", ["n", 4])] + ([tensor("w", [4, 300])] if weights_as_input else [])
    return make_model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], inputs, [tensor("y", ["n", 300])], init)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lrpc.cli", *map(str, args)], capture_output=True, text=True)


def external_model(folder, location):
    """dense() saved with its weight in `w.data`, then its location rewritten to `location`."""
    folder.mkdir(exist_ok=True)
    onnx.save(dense(), folder / "m.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    proto = onnx.load(folder / "m.onnx", load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(proto, folder / "m.onnx")
    return folder / "m.onnx"


def write_bytes(path, data):
    path.write_bytes(data)
    return path


CASES = {
    "truncated": (lambda d: write_bytes(d / "m.onnx", dense().SerializeToString()[:60]), "not an ONNX model"),
    "a tensor": (
        lambda d: write_bytes(d / "m.onnx", numpy_helper.from_array(W).SerializeToString()),
        "lrpc reads an ONNX ModelProto file",
    ),
    "a bare graph": (lambda d: write_bytes(d / "m.onnx", dense().graph.SerializeToString()), "not an ONNX model"),
    "empty": (lambda d: write_bytes(d / "m.onnx", b""), "no graph found"),
    "opset 30": (
        lambda d: write_bytes(
            d / "m.onnx",
            helper.make_model(dense().graph, opset_imports=[helper.make_opsetid("", 30)]).SerializeToString(),
        ),
        "the model uses opset 30; lrpc reads opsets 13–26",
    ),
    "data in the parent folder": (lambda d: external_model(d / "sub", "../w.data"), "outside the model's folder"),
    "data at an absolute path": (lambda d: external_model(d / "sub", "/etc/hostname"), "outside the model's folder"),
    "data missing": (lambda d: external_model(d / "sub", "gone.data"), "cannot read its external weight data"),
    "weights fed as an input": (
        lambda d: write_bytes(d / "m.onnx", dense(True).SerializeToString()),
        "'fc' (Gemm): its weight B (input 1) is not a constant",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_file_gets_one_clear_error_and_no_output(tmp_path, case):
    make, message = CASES[case]
    model = make(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(lrpc.LrpcError, match=re.escape(message)):
        lrpc.compile(str(model), output=tmp_path / "explained.onnx")
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "secret.data").write_bytes(W.tobytes())
    model = external_model(tmp_path / "sub", "link.data")
    os.symlink(tmp_path / "secret.data", tmp_path / "sub" / "link.data")
    with pytest.raises(lrpc.LrpcError, match="it resolves to .*secret.data'.*outside the model's folder"):
        lrpc.compile(str(model))


def test_the_cli_exits_2_with_one_line_and_leaves_nothing(tmp_path):
    model = CASES["data in the parent folder"][0](tmp_path)
    done = cli("compile", model, "-o", tmp_path / "out.onnx")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("lrpc: error: ") and not (tmp_path / "out.onnx").exists()
    unwritable = cli("compile", model.parent / "m.onnx", "-o", tmp_path / "no" / "such" / "out.onnx")
    assert unwritable.returncode == 2 and "lrpc: error:" in unwritable.stderr


def relevance(path_or_proto, x):
    source = path_or_proto if isinstance(path_or_proto, (str, os.PathLike)) else path_or_proto.SerializeToString()
    return ort.InferenceSession(str(source) if isinstance(source, os.PathLike) else source).run(None, {"x": x})[-1]


def test_external_weights_in_and_out(tmp_path, monkeypatch):
    """Weights beside the model are read; an explained file over the protobuf limit is written with its
    weights in FILE.data (the limit lowered here so that a small model takes that path)."""
    model = external_model(tmp_path / "in", "w.data")
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    inline = relevance(lrpc.compile(dense(), rule="epsilon"), x)
    monkeypatch.setattr(emit, "_PROTOBUF_LIMIT", 64)
    out = tmp_path / "out" / "explained.onnx"
    out.parent.mkdir()
    lrpc.compile(str(model), rule="epsilon", output=out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["explained.onnx", "explained.onnx.data"]
    np.testing.assert_array_equal(relevance(out, x), inline)


def test_an_index_input_is_explained_at_its_lookup():
    """An int64 index input (an embedding lookup) beside a float input: each gets its relevance output,
    the index input's per index (the sum over the looked-up row), and together they hold the split of
    the sum x + e."""
    emb = np.arange(20, dtype=np.float32).reshape(5, 4) / 10
    model = make_model(
        [
            helper.make_node("Gather", ["emb", "idx"], ["e"]),
            helper.make_node("Add", ["x", "e"], ["h"]),
            helper.make_node("Gemm", ["h", "w"], ["y"], name="fc"),
        ],
        [tensor("x", ["n", 4]), helper.make_tensor_value_info("idx", TensorProto.INT64, ["n"])],
        [tensor("y", ["n", 300])],
        {"w": W, "emb": emb},
    )
    sess = ort.InferenceSession(lrpc.compile(model, rule="epsilon").SerializeToString())
    assert [o.name for o in sess.get_outputs()] == ["y", "relevance_x", "relevance_idx"]
    x, idx = np.ones((2, 4), np.float32), np.array([1, 3])
    y, r_x, r_idx = sess.run(None, {"x": x, "idx": idx})
    assert r_x.shape == x.shape and r_idx.shape == idx.shape and np.isfinite(r_x).all()
    np.testing.assert_allclose(r_idx, (r_x * emb[idx] / x).sum(1), rtol=1e-5)  # the same R/h per unit


def test_small_cnn_still_compiles_from_a_path_with_spaces(tmp_path):
    folder = tmp_path / "a folder"
    folder.mkdir()
    onnx.save(small_cnn(), folder / "my model.onnx")
    lrpc.compile(str(folder / "my model.onnx"), output=folder / "explained model.onnx")
    assert (folder / "explained model.onnx").exists()


def test_an_internal_error_is_one_line_and_exit_3(tmp_path, monkeypatch, capsys):
    """A bug in lrpc (here: a pass that raises) is reported, not shown as a traceback; LRPC_DEBUG=1 re-raises."""
    from lrpc import cli

    def broken(*args, **kwargs):
        raise KeyError("no such tensor")

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    monkeypatch.setattr(cli, "compile", broken)
    assert cli.main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.onnx")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("lrpc: internal error: KeyError") and err.count("\n") == 1 and "LRPC_DEBUG=1" in err
    monkeypatch.setenv("LRPC_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.onnx")])
