"""One zoo cell: compile a model with some options, verify the explained file, and say it in a table cell.

Used by benchmarks/modern_zoo.py (timm, ONNX) and benchmarks/keras_zoo.py (keras.applications, `.keras`).
A cell is `{"compiled": False, "error": …}` or `{"compiled": True, "seconds": …, "verify": "pass" | what
did not pass, "worst": the largest float32-vs-float64 error verify measured, or None where it did not run}`.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def error_text(e: Exception) -> str:
    """An exception as one line: its type and the first line of its message."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def compile_and_verify(source, inputs=None, samples: int = 2, **options) -> dict:
    """`lrpc.compile(source, **options)`, then `lrpc.verify` against a fresh compile of `source` on `inputs`
    (or `samples` random ones). Every check that did not pass is named with verify's own label."""
    import lrpc
    from lrpc.verify.report import LABELS

    t = time.perf_counter()
    try:
        explained = lrpc.compile(source, **options)
    except Exception as e:  # noqa: BLE001  (any failure is a table cell)
        return {"compiled": False, "error": error_text(e)}
    seconds = time.perf_counter() - t
    report = lrpc.verify(explained, source=source, inputs=inputs, samples=samples)
    failed = [f"{LABELS[c.status]} {c.name} ({c.detail})" for c in report.checks if c.status not in ("pass", "info")]
    verdict = "pass" if report.passed else "; ".join(failed) or "FAIL (no check names a reason)"
    errors = [row["error"] for row in report.rows if row.get("error") is not None]
    return {"compiled": True, "seconds": round(seconds, 2), "verify": verdict, "worst": max(errors, default=None)}


def short(error: str, limit: int = 160) -> str:
    """An error for a table cell: lrpc's list of unexplained nodes cut to its first entry, at most `limit`."""
    head, sep, rest = error.partition(" cannot be explained: ")
    count = re.search(r"(\d+) nodes?$", head)
    if sep and count:
        more = int(count.group(1)) - 1
        error = f"{head} cannot be explained: {rest.split('; ')[0]}" + (f" (+{more} more)" if more else "")
    return error if len(error) <= limit else error[: limit - 1] + "…"


def cell_text(cell: dict) -> str:
    """'yes, verify pass', 'yes, verify ILL-CONDITIONED float64 (…)' or 'no: `the refusal`'."""
    if not cell["compiled"]:
        return f"no: `{short(cell['error'])}`"
    return "yes, verify " + ("pass" if cell["verify"] == "pass" else short(cell["verify"], 120).replace("|", "\\|"))


def commit() -> str:
    """The checkout's short commit, '+ working tree' (a report may be generated before committing)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return head.stdout.strip() + " + working tree"
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"


def command_line(script: str, models, out) -> str:
    """How a zoo run is repeated: `python benchmarks/SCRIPT [--models …] [--out …]`."""
    return (
        f"python benchmarks/{script}"
        + (" --models " + " ".join(models) if models else "")
        + (f" --out {out}" if out else "")
    )


def write_report(text: str, out) -> None:
    """The Markdown report to `out`, or to standard output without one."""
    if out:
        Path(out).write_text(text)
    else:
        print(text)
