"""`lrpc compile --format savedmodel` where TensorFlow is not installed (the project's own .venv): exit 2,
one line saying what to install, and no output left behind. Where TensorFlow is importable this is
skipped; tests/keras/test_savedmodel.py checks the same message there with the import blocked."""

import importlib.util

import onnx
import pytest

from lrpc.cli import main

import nets

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here"
)


def test_savedmodel_without_tensorflow_says_what_to_install(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(nets.small_cnn(), str(model))
    assert main(["compile", str(model), "--format", "savedmodel", "-o", str(tmp_path / "sm")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrpc: error: ") and 'pip install "lrpc[keras]"' in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_the_onnx_format_needs_no_tensorflow(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(nets.small_cnn(), str(model))
    assert main(["compile", str(model), "--format", "onnx", "-o", str(tmp_path / "e.onnx")]) == 0
    assert (tmp_path / "e.onnx").exists()
