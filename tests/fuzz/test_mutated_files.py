"""Fuzzing with broken files (issue 10, item 4b): random mutations of valid models (mutations.py), given
to lrpc.compile by path with an output path. Each must end in one of two ways, within a hard deadline:

- success: the output file exists, passes onnx.checker.check_model(full_check=True) and runs in
  onnxruntime (CPU) on inputs of its declared shapes and types;
- lrpc.LrpcError with a message (one paragraph, no traceback), and nothing written: the output folder
  holds only the input file afterwards.

Any other exception fails the test (what it found is pinned in tests/compiler/test_fuzz_findings.py). A
sample goes through the CLI (`python -m lrpc.cli compile in.onnx -o out.onnx` in a subprocess): exit
status 0 with a valid file, or 2 with the one `lrpc: error:` line on stderr and no file. `judge.TALLY` counts
the outcomes by mutation and error kind (LRPC_FUZZ_STATS writes them out).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, note

import lrpc
from judge import TALLY, deadline, fuzz_settings
from mutations import mutated_files

pytestmark = pytest.mark.fuzz
BATCH = 2
COMPILE_SECONDS = 30.0
NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


# bugs in files this test's author does not own, tolerated (and counted) until fixed
def error_kind(message: str) -> str:
    """The message's gist for the tally: its first clause, names and numbers masked."""
    gist = re.split(r"[;(]", re.sub(r"\S*/\S*: ", "", message), maxsplit=1)[0]
    gist = re.sub(r"'[^']*'", "'…'", gist)
    gist = re.sub(r"\d+", "N", gist)
    return " ".join(gist.split()[:12])


def feeds(sess, input_shape) -> dict:
    """Random inputs of each declared input's shape (the batch and symbolic dims: BATCH) and type."""
    rng = np.random.default_rng(0)
    out = {}
    for i in sess.get_inputs():
        dims = [d if isinstance(d, int) else BATCH for d in i.shape] if i.shape else [BATCH, *input_shape]
        out[i.name] = rng.standard_normal(dims).astype(NUMPY[i.type])
    return out


def check_written(path: Path, input_shape) -> None:
    explained = onnx.load(path)
    onnx.checker.check_model(explained, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess.run(None, feeds(sess, input_shape))


def check_clean_error(error: lrpc.LrpcError, folder: Path) -> None:
    message = str(error)
    assert message.strip() and "Traceback" not in message, f"unclear message: {message!r}"
    assert sorted(p.name for p in folder.iterdir()) == ["in.onnx"], "a failed compile left files behind"


@fuzz_settings(600)
@given(case=mutated_files())
def test_a_mutated_file_compiles_or_fails_cleanly(case):
    graph, kind, data = case
    note(f"mutation: {kind}")
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        (folder / "in.onnx").write_bytes(data)
        try:
            with deadline(COMPILE_SECONDS, "lrpc.compile"):
                lrpc.compile(str(folder / "in.onnx"), output=folder / "out.onnx")
        except lrpc.LrpcError as e:
            note(f"LrpcError: {e}")
            check_clean_error(e, folder)
            TALLY[f"mutations: {kind}: LrpcError"] += 1
            TALLY[f"errors: {error_kind(str(e))}"] += 1
            return
        check_written(folder / "out.onnx", graph.input_shape)
        TALLY[f"mutations: {kind}: compiled"] += 1


@fuzz_settings(600, fraction=60)  # a subprocess each: ~1 s
@given(case=mutated_files())
def test_the_cli_writes_a_valid_file_or_nothing(case):
    graph, kind, data = case
    note(f"mutation: {kind}")
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        (folder / "in.onnx").write_bytes(data)
        done = subprocess.run(
            [sys.executable, "-m", "lrpc.cli", "compile", "in.onnx", "-o", "out.onnx"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
        note(f"exit {done.returncode}: {done.stderr}")
        assert done.returncode in (0, 2) and "Traceback" not in done.stderr
        if done.returncode == 0:
            check_written(folder / "out.onnx", graph.input_shape)
            TALLY[f"cli: {kind}: compiled"] += 1
            return
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lrpc: error: "), done.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["in.onnx"], "a failed compile left files behind"
        TALLY[f"cli: {kind}: exit 2"] += 1
