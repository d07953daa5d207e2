"""Signals at random points of an `lrpc` command run as a subprocess, and how an outcome is judged.

A run is started as a program would be (`python -m lrpc.cli …`, SIGINT at its default as on a terminal,
even under a background shell) and sent one signal after a seeded delay. Delays fall in three phases of
the command's measured duration D: early (the first 50 ms: CPython starting, then `import lrpc`), middle
(anywhere up to D) and late (the last half second: the final rename, cleanup, interpreter exit).

The exit is judged against lrpc's contract: 0 (it finished), or 128 + N with exactly the one line
`lrpc: interrupted by SIGx; no partial output left` on stderr and no traceback. A run that died from the
signal's own default action (status −N), or in CPython's start-up (`Fatal Python error: init_…`), is
accepted only when lrpc had not yet caught signals or had finished: no frame of lrpc's code shows on stderr,
or the only ones are the package's `__init__` up to its `quiet_start(…)` line and lrpc/startup.py (a
KeyboardInterrupt before quiet_start installed its handlers: no package can act before its first line; the
window is kept short, see lrpc.startup). A KeyboardInterrupt traceback from module bodies after that
is a problem: the signal came while `import lrpc` ran, and quiet_start should have caught it.
"""

from __future__ import annotations

import hashlib
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lrpc
import lrpc.startup
import lrpc_runtime

CODE_FOLDERS = tuple(str(Path(m.__file__).resolve().parent) for m in (lrpc, lrpc_runtime))
PACKAGE_INIT, STARTUP = (str(Path(m.__file__).resolve()) for m in (lrpc, lrpc.startup))
QUIET_LINE = next(
    number
    for number, line in enumerate(Path(PACKAGE_INIT).read_text().splitlines(), 1)
    if line.startswith("quiet_start()")
)
CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EARLY_S, LATE_S = 0.05, 0.5
FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)', re.M)


@dataclass(frozen=True)
class Point:
    """One signal sent `delay` seconds into a run; `phase` says which part of the run it aims at."""

    signum: int
    delay: float
    phase: str

    def __str__(self) -> str:
        return f"{signal.Signals(self.signum).name} at {self.delay:.3f} s ({self.phase})"


@dataclass(frozen=True)
class Outcome:
    point: Point | None
    returncode: int
    stdout: str
    stderr: str


def points(seed: int, count: int, duration: float, signals=CAUGHT) -> list[Point]:
    """`count` points through the phases and signals (each pair once in 9), each delay drawn in its phase.

    Example::

        >>> [p.phase for p in points(0, 4, 3.0)]
        ['early', 'middle', 'late', 'early']
    """
    rng = random.Random(seed)
    order = list(signals)
    rng.shuffle(order)
    phases = {"early": (0.0, EARLY_S), "middle": (EARLY_S, duration), "late": (max(0.0, duration - LATE_S), duration)}
    names = list(phases)
    chosen = [(order[(i + i // 3) % len(order)], names[i % 3]) for i in range(count)]  # 9 points: every pair
    return [Point(signum, rng.uniform(*phases[phase]), phase) for signum, phase in chosen]


def _terminal_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # what a shell's foreground job starts with


def start(args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lrpc.cli", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_terminal_sigint,
    )


def run(args, cwd: Path, point: Point | None = None, timeout: float = 300) -> Outcome:
    """Run the command; with `point`, send its signal after its delay (unless the run ended before)."""
    process = start(args, cwd)
    if point is not None:
        time.sleep(point.delay)
        if process.poll() is None:
            process.send_signal(point.signum)
    out, err = process.communicate(timeout=timeout)
    return Outcome(point, process.returncode, out, err)


def timed(args, cwd: Path) -> tuple[Outcome, float]:
    begin = time.monotonic()
    outcome = run(args, cwd)
    return outcome, time.monotonic() - begin


def lrpc_frames(stderr: str) -> list[tuple[str, int, str]]:
    """(file, line, function) of the traceback frames on stderr that are lrpc's own code."""
    return [(path, int(line), where) for path, line, where in FRAME.findall(stderr) if path.startswith(CODE_FOLDERS)]


def before_quiet_start(frames: list[tuple[str, int, str]]) -> bool:
    """Whether the frames show lrpc only up to the moment quiet_start installed its handlers."""
    return all((path == PACKAGE_INIT and line <= QUIET_LINE) or path == STARTUP for path, line, _ in frames)


def interrupt_line(signum: int) -> str:
    return f"lrpc: interrupted by {signal.Signals(signum).name}; no partial output left\n"


def exit_problem(outcome: Outcome) -> str | None:
    """What breaks the exit contract (see the module docstring), or None."""
    code, err = outcome.returncode, outcome.stderr
    signum = outcome.point.signum if outcome.point else None
    if code == 0:
        return "a traceback on stderr" if "Traceback" in err else None
    if signum is None:
        return f"exit {code}: {err[-300:]}"
    if code == 128 + signum:
        return None if err == interrupt_line(signum) else f"exit {code} but stderr is {err[-400:]!r}"
    frames = lrpc_frames(err)
    outside = code == -signum or (code == 1 and "Fatal Python error: init_" in err)  # CPython's own start-up
    if outside and before_quiet_start(frames):
        return None
    if frames and all(where == "<module>" for _, _, where in frames) and err.rstrip().endswith("KeyboardInterrupt"):
        return f"a KeyboardInterrupt traceback from `import lrpc` after quiet_start: {frames[-1]}"
    return f"exit {code}; stderr ends {err[-400:]!r}"


def leftovers(folder: Path) -> list[str]:
    """Staging folders and temporary files anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".partial", ".tmp")))


def digest(path: Path) -> dict[str, str]:
    """{relative name: sha256} of a file, or of every file under a folder ({} when absent)."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }
