"""Without TensorFlow (the project's own environment) a Keras source gets one error line saying what to
install, exit status 2, and no output file; ONNX models need none of it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lrpc.cli import main


@pytest.fixture
def no_tensorflow(monkeypatch):
    """Make `import tensorflow` fail even where it is installed."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)


@pytest.mark.parametrize("kind", ["model.keras", "model.h5", "saved_model_dir"])
@pytest.mark.parametrize("command", ["compile", "inspect"])
def test_keras_source_without_tensorflow_says_what_to_install(kind, command, no_tensorflow, tmp_path, capsys):
    source = tmp_path / kind
    if kind == "saved_model_dir":
        source.mkdir()
        (source / "saved_model.pb").write_bytes(b"\x08\x01")
    else:
        source.write_bytes(b"not read: the import fails first")
    out = tmp_path / "explained.onnx"
    argv = [command, str(source)] + (["-o", str(out)] if command == "compile" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lrpc: error: ") and 'pip install "lrpc[keras]"' in err[0]
    assert not out.exists()


def test_onnx_models_compile_without_tensorflow(no_tensorflow, tmp_path):
    out = tmp_path / "explained.onnx"
    assert (
        main(["compile", str(Path(__file__).parents[2] / "models" / "digits_cnn.onnx"), "-o", str(out)]) == 0
        and out.exists()
    )
