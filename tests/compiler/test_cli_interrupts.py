"""`lrpc explain` and `lrpc compile` never destroy or half-write the user's files: OUTDIR apart from the inputs,
a non-empty OUTDIR replaced only with --overwrite and then as a whole, and a run stopped by a signal leaves
nothing behind (caught signals clean up at once; a killed run's staging goes with the next run)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS = np.load(ROOT / "models" / "digits_test.npz")

# The CLI, held for a minute inside one step, so that a signal arrives at a known point of the run.
STALLED = """
import signal, sys, time
for number in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(number, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)  # as on a terminal, even if started in the background
import {module} as where
real = where.{name}
def stalled(*args, **kwargs):
    result = real(*args, **kwargs)
    time.sleep(60)
    return result
where.{name} = stalled
from lrpc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def photos(tmp_path) -> pathlib.Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        gray = Image.fromarray(np.rint(DIGITS["x"][i, 0] * 255).astype(np.uint8))
        gray.resize((64, 64), Image.Resampling.NEAREST).save(folder / f"digit{i}.png")
    return folder


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrpc.cli", *map(str, args)], capture_output=True, text=True)


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def start_stalled(module: str, name: str, *args) -> subprocess.Popen:
    code = STALLED.format(module=module, name=name)
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(folder: pathlib.Path, pattern: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not list(folder.glob(pattern)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the staging never appeared"
        time.sleep(0.05)
    time.sleep(0.3)  # into the stalled step


def test_outdir_among_the_inputs_is_refused(explained, photos, tmp_path):
    before = snapshot(tmp_path)
    for out in (photos, tmp_path, photos / "heatmaps", explained.parent):  # the last holds the model
        done = run("explain", explained, photos, "-o", out, "--overwrite")
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "the results would replace or mix with the files they explain" in done.stderr
    assert snapshot(tmp_path) == before


def test_a_non_empty_outdir_needs_overwrite_and_is_then_replaced_whole(explained, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    (out / "digit1.png").mkdir()  # a folder where a heatmap goes: it once blocked one move of many
    (out / "digit1.png" / "x").write_text("old")
    done = run("explain", explained, photos, "-o", out)
    assert done.returncode == 2 and "exists and is not empty; add --overwrite" in done.stderr
    assert snapshot(out) == {"mine.txt": b"keep", "digit1.png/x": b"old"}
    done = run("explain", explained, photos, "-o", out, "--overwrite", "-q")
    assert done.returncode == 0, done.stderr
    assert sorted(snapshot(out)) == [f"digit{i}.png" for i in range(4)] + ["predictions.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


def test_a_failed_explain_removes_the_folders_it_created(explained, photos, tmp_path):
    (photos / "zz_broken.png").write_bytes(b"\x89PNG not really")
    done = run("explain", explained, photos, "-o", tmp_path / "new" / "deeper" / "out")
    assert done.returncode == 2 and "zz_broken.png: cannot read the image" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_a_structured_array_is_refused_with_exit_2(explained, tmp_path):
    np.save(tmp_path / "records.npy", np.zeros((2,), [("x", "f4", (1, 8, 8))]))
    done = run("explain", explained, tmp_path / "records.npy", "-o", tmp_path / "out")
    assert done.returncode == 2 and "records.npy: an array of dtype" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.npy"]


@pytest.mark.parametrize(
    "number, status",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_signal_during_explain_leaves_nothing(explained, photos, tmp_path, number, status):
    out = tmp_path / "out"
    process = start_stalled("lrpc_runtime.files", "explain_chunk", "explain", explained, photos, "-o", out, "-q")
    wait_for(tmp_path, ".out.*.partial/*.png", process)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert stderr == f"lrpc: interrupted by {signal.Signals(number).name}; no partial output left\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_a_signal_keeps_an_old_outdir_as_it_was(explained, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_text("old")
    process = start_stalled(
        "lrpc_runtime.files", "explain_chunk", "explain", explained, photos, "-o", out, "--overwrite", "-q"
    )
    wait_for(tmp_path, ".out.*.partial/*.png", process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 143
    assert snapshot(out) == {"old.png": b"old"} and sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


def test_a_killed_explain_is_cleaned_up_by_the_next_run(explained, photos, tmp_path):
    out = tmp_path / "out"
    process = start_stalled("lrpc_runtime.files", "explain_chunk", "explain", explained, photos, "-o", out, "-q")
    wait_for(tmp_path, ".out.*.partial/*.png", process)
    process.kill()  # as the OOM killer does: no handler runs
    process.communicate(timeout=60)
    assert [p.name.endswith(".partial") for p in tmp_path.iterdir() if p.name != "photos"] == [True]
    done = run("explain", explained, photos, "-o", out, "-q")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


def test_sigterm_during_compile_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "explained.onnx"
    process = start_stalled("onnx", "save_model", "compile", ROOT / "models" / "digits_cnn.onnx", "-o", out)
    wait_for(tmp_path, ".explained.onnx.*.tmp", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and stderr.endswith("lrpc: interrupted by SIGTERM; no partial output left\n")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_compile_is_cleaned_up_by_the_next_one(tmp_path):
    out = tmp_path / "explained.onnx"
    process = start_stalled("onnx", "save_model", "compile", ROOT / "models" / "digits_cnn.onnx", "-o", out)
    wait_for(tmp_path, ".explained.onnx.*.tmp", process)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert len(list(tmp_path.glob(".explained.onnx.*.tmp"))) == 1
    done = run("compile", ROOT / "models" / "digits_cnn.onnx", "-o", out)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["explained.onnx"]


# The lrpc program's start and end (startup.quiet_start): `lrpc_program` is forced true, as under
# `python -m lrpc.cli`, then a signal during a command raises, and one after it ends the process at once.
QUIET = """
import os, signal, sys, time
from lrpc import signals, startup
startup.lrpc_program = lambda *args: True
startup.quiet_start()
with signals.signals_raise():
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(30)
    except signals.Interrupted as stop:
        print("raised", stop.signum)  # not flushed: the exit must flush it
os.kill(os.getpid(), signal.{name})
time.sleep(30)
print("not reached")
"""


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_outside_a_command_a_signal_ends_the_program_with_one_line(number):
    done = subprocess.run(
        [sys.executable, "-c", QUIET.format(name=signal.Signals(number).name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 128 + number
    assert done.stdout == f"raised {int(signal.SIGHUP)}\n"
    assert done.stderr == f"lrpc: interrupted by {signal.Signals(number).name}; no partial output left\n"


def test_as_a_library_lrpc_leaves_the_signal_handlers_alone():
    code = (
        "import signal; before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]; "
        "import lrpc.cli, lrpc.startup as s; s.quiet_start(); "
        "print(before == [signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "True\n", done.stderr
