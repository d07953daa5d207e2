"""verify's float64 check runs — and passes, not NOT RUN — on every model the tests keep as a file
(tests/fixtures/**.onnx, models/*.onnx) and the hand-built ones (models/vgg.py's small VGG, nets.small_cnn),
compiled with the default composite and with the ε-rule, against a fresh compile of the source."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

import lrpc
from nets import small_cnn

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = sorted([*ROOT.glob("tests/fixtures/**/*.onnx"), *ROOT.glob("models/*.onnx")])
NOT_COMPILED: dict[str, str] = {}  # a model file lrpc is meant to refuse: its path → why


def _small_vgg():
    spec = importlib.util.spec_from_file_location("lrpc_models_vgg", ROOT / "models" / "vgg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.small_vgg().SerializeToString()


BUILT = {"models/vgg.py small_vgg": _small_vgg, "nets.small_cnn": lambda: small_cnn().SerializeToString()}
SOURCES = [
    pytest.param(path, id=str(path.relative_to(ROOT)))
    for path in FILES
    if str(path.relative_to(ROOT)) not in NOT_COMPILED
] + [pytest.param(b, id=name) for name, b in BUILT.items()]


def test_the_model_files_are_found():
    assert len(FILES) >= 13 and ROOT / "models" / "digits_cnn.onnx" in FILES


@pytest.mark.parametrize("rule", [None, "epsilon"])
@pytest.mark.parametrize("source", SOURCES)
def test_the_float64_check_runs_and_passes(source, rule):
    source = source() if callable(source) else source
    explained = lrpc.compile(source, rule=rule)
    report = lrpc.verify(explained, source=source, samples=2)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["float64"] == "pass" and statuses["source"] == "pass", report.text()
    assert all(row["error"] is not None and row["error"] < 1e-4 for row in report.rows), report.text()
