"""SIGINT, SIGTERM and SIGHUP at seeded random points of `lrpc compile` and `lrpc explain` (issue 18), and
SIGKILL at random points followed by a second run into the same place.

After each signal: the exit keeps lrpc's contract (signal_runs.exit_problem: 0, or 128 + N with one line);
no staging folder (`.OUT.*.partial`) or temporary file (`*.tmp`) remains; the output is absent — or the old
one, untouched, when one was there — or complete (explain: every heatmap and predictions.csv; compile: the
same bytes as an uninterrupted compile, an explained file); the inputs and the model are unchanged. After
SIGKILL nothing can clean up, so leftovers may stay: the next run must remove them and finish.

The quick lane sends a handful of signals (LRPC_FUZZ_SEED picks the delays, default 18); `slow` many more.
A SIGINT before lrpc.startup.quiet_start has run is CPython's KeyboardInterrupt, like one during the
interpreter's own start-up; signal_runs accepts both when the traceback shows lrpc no further. One during
the rest of `import lrpc` (most of the first 1.5 s) must end the run with the one line.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import signal_runs
from signal_runs import Point, digest, exit_problem, leftovers, points, run, timed

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("LRPC_FUZZ_SEED", "18"))


@dataclass
class Case:
    """One command to interrupt: its arguments for an output path, and what a complete output is."""

    name: str
    args: list
    out_name: str
    reference: dict  # digest of the uninterrupted run's output
    old: Path  # an earlier output that a run may replace
    duration: float
    inputs: Path
    model: Path

    def command(self, out: Path, over_old: bool) -> list:
        extra = ["--overwrite"] if over_old and self.name == "explain" else []
        return [*self.args, "-o", out, *extra]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, explained) -> Path:
    """inputs/: 30 digit PNGs (32×32) and two .npy files; model.onnx (explained); source.onnx."""
    folder = tmp_path_factory.mktemp("signals")
    inputs = folder / "inputs"
    inputs.mkdir()
    digits = np.load(ROOT / "models" / "digits_test.npz")["x"]
    for i in range(30):
        picture = Image.fromarray(np.rint(digits[i, 0] * 255).astype(np.uint8))
        picture.resize((32, 32), Image.Resampling.NEAREST).save(inputs / f"digit{i:02d}.png")
    np.save(inputs / "one.npy", digits[30].astype(np.float32))
    np.save(inputs / "batch.npy", digits[31:35].astype(np.float32))
    shutil.copy(explained, folder / "model.onnx")
    shutil.copy(ROOT / "models" / "digits_cnn.onnx", folder / "source.onnx")
    return folder


def _reference(args: list, out_name: str, folder: Path) -> tuple[dict, float]:
    target = folder / "reference" / out_name
    target.parent.mkdir()
    outcome, duration = timed([*args, "-o", target], folder)
    assert outcome.returncode == 0, outcome.stderr
    return digest(target), duration


@pytest.fixture(scope="module")
def explain_case(workspace, tmp_path_factory) -> Case:
    args = ["explain", workspace / "model.onnx", workspace / "inputs", "-q"]
    folder = tmp_path_factory.mktemp("explain-reference")
    reference, duration = _reference(args, "out", folder)
    old = folder / "old"
    old.mkdir()
    (old / "mine.png").write_bytes(b"an old heatmap")
    (old / "predictions.csv").write_text("old\n")
    return Case("explain", args, "out", reference, old, duration, workspace / "inputs", workspace / "model.onnx")


@pytest.fixture(scope="module")
def compile_case(workspace, tmp_path_factory, explained) -> Case:
    args = ["compile", workspace / "source.onnx"]
    folder = tmp_path_factory.mktemp("compile-reference")
    reference, duration = _reference(args, "explained.onnx", folder)
    model = onnx.load(folder / "reference" / "explained.onnx")
    assert any(p.key == "lrpc.relevance" for p in model.metadata_props)
    return Case(
        "compile",
        args,
        "explained.onnx",
        reference,
        Path(explained),
        duration,
        workspace / "inputs",
        workspace / "source.onnx",
    )


def _complete_explain(out: Path, reference: dict) -> bool:
    """Every heatmap and predictions.csv, each PNG readable, the table one row per sample."""
    if sorted(digest(out)) != sorted(reference):
        return False
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if sorted(f"{r['input']}.png" for r in rows) != sorted(n for n in reference if n.endswith(".png")):
        return False
    for png in out.glob("*.png"):
        with Image.open(png) as picture:
            picture.load()
    return True


def complete(case: Case, out: Path) -> bool:
    return digest(out) == case.reference if case.name == "compile" else _complete_explain(out, case.reference)


def output_problem(case: Case, out: Path, old: dict | None) -> str | None:
    """None when `out` is absent (or `old`, untouched) or complete."""
    if digest(out) == (old or {}) or complete(case, out):
        return None
    return f"a partial or foreign output: {sorted(digest(out))[:8]}"


def _place(case: Case, folder: Path, over_old: bool) -> tuple[Path, dict | None]:
    folder.mkdir()
    out = folder / case.out_name
    if over_old:
        (shutil.copytree if case.old.is_dir() else shutil.copy)(case.old, out)
    return out, (digest(out) if over_old else None)


def _inputs(case: Case) -> dict:
    return {**digest(case.inputs), "model": digest(case.model)["."]}


def _after_kill(case: Case, out: Path, old: dict | None, over_old: bool, folder: Path) -> list[str | None]:
    """A kill leaves the output all or nothing; the next run into the same place removes what it left."""
    problems = [output_problem(case, out, old)]
    outcome = run(case.command(out, over_old or out.exists()), folder)
    problems.append(exit_problem(outcome) and f"the run after the kill: {exit_problem(outcome)}")
    problems.append(None if complete(case, out) else "the run after the kill left no complete output")
    return problems


def check_point(case: Case, folder: Path, point: Point, over_old: bool) -> list[str]:
    """Problems after one signal at `point` (an empty list: none)."""
    out, old = _place(case, folder, over_old)
    before = _inputs(case)
    outcome = run(case.command(out, over_old), folder, point)
    if point.signum == signal.SIGKILL:
        problems = _after_kill(case, out, old, over_old, folder)
    else:
        problems = [exit_problem(outcome), output_problem(case, out, old)]
    left = leftovers(folder) + leftovers(case.inputs)
    problems += [left and f"left behind: {left}", None if _inputs(case) == before else "an input changed"]
    return [f"{case.name}, {point}{', over an old output' if over_old else ''}: {p}" for p in problems if p]


def check_points(case: Case, tmp_path: Path, chosen: list[Point]) -> None:
    """Fail on any problem."""
    found = []
    for i, point in enumerate(chosen):
        found += check_point(case, tmp_path / f"p{i}", point, over_old=i % 2 == 1)
    assert not found, "\n".join(found)


def kill_points(seed: int, count: int, duration: float) -> list[Point]:
    """SIGKILL at `count` delays drawn uniformly over the run."""
    rng = random.Random(seed)
    return [Point(signal.SIGKILL, rng.uniform(0, duration), "anywhere") for _ in range(count)]


@pytest.mark.parametrize("which", ["explain", "compile"])
def test_signals_at_random_points(which, request, tmp_path):
    case = request.getfixturevalue(f"{which}_case")
    check_points(case, tmp_path, points(SEED, 3, case.duration))


@pytest.mark.parametrize("which", ["explain", "compile"])
def test_a_kill_at_a_random_point_is_cleaned_up_by_the_next_run(which, request, tmp_path):
    case = request.getfixturevalue(f"{which}_case")
    check_points(case, tmp_path, kill_points(SEED, 1, case.duration))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["explain", "compile"])
def test_many_signals_at_random_points(which, request, tmp_path):
    case = request.getfixturevalue(f"{which}_case")
    check_points(case, tmp_path, points(SEED + 1, 24, case.duration))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["explain", "compile"])
def test_many_kills_at_random_points(which, request, tmp_path):
    case = request.getfixturevalue(f"{which}_case")
    check_points(case, tmp_path, kill_points(SEED + 1, 6, case.duration))


def test_the_points_cover_every_phase_and_signal():
    chosen = points(SEED, 3, 2.0)
    assert {p.phase for p in chosen} == {"early", "middle", "late"}
    assert {p.signum for p in chosen} == set(signal_runs.CAUGHT)
    assert all(0 <= p.delay <= 2.0 for p in chosen)


def _traceback(*frames: tuple[str, int]) -> str:
    lines = "".join(f'  File "{path}", line {line}, in <module>\n' for path, line in frames)
    return f"Traceback (most recent call last):\n{lines}KeyboardInterrupt\n"


def test_the_judge_accepts_a_sigint_only_before_quiet_start():
    """CPython's KeyboardInterrupt before quiet_start ran (the package's first lines, lrpc/startup.py) is
    the interpreter's; one from any later module body is a problem, as is a traceback after exit 0."""
    sigint = Point(signal.SIGINT, 0.02, "early")
    runpy = ("<frozen runpy>", 112)
    early = [(signal_runs.PACKAGE_INIT, signal_runs.QUIET_LINE - 2), (signal_runs.STARTUP, 3)]
    late = [
        (signal_runs.PACKAGE_INIT, signal_runs.QUIET_LINE + 2),
        (str(Path(signal_runs.PACKAGE_INIT).parent / "api.py"), 9),
    ]
    judged = {
        name: exit_problem(signal_runs.Outcome(sigint, code, "", err))
        for name, code, err in [
            ("interpreter", -signal.SIGINT, _traceback(runpy)),
            ("before", -signal.SIGINT, _traceback(runpy, *early)),
            ("in quiet_start", -signal.SIGINT, _traceback(runpy, early[0], (signal_runs.STARTUP, 70))),
            ("after", -signal.SIGINT, _traceback(runpy, *late)),
            ("finished with a traceback", 0, _traceback(runpy)),
            ("the one line", 130, signal_runs.interrupt_line(signal.SIGINT)),
        ]
    }
    assert [name for name, problem in judged.items() if problem] == ["after", "finished with a traceback"]
    assert "after quiet_start" in judged["after"]
