"""What `lrpc verify` found, and how it reads: one row per sample, one line per check, one verdict.

A check's status is one of

    pass      it ran and held
    fail      it ran and did not hold
    info      reported, not judged (conservation where LRP does not conserve exactly)
    skipped   it could not run (printed NOT RUN): never a pass

`passed` holds only when every check ran and none failed. The verdict names the worst outcome:
FAILED, then NOT VERIFIED, else "verified: every check passed".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NOT_PASSED = ("fail", "skipped")
LABELS = {"pass": "PASS", "fail": "FAIL", "info": "INFO", "skipped": "NOT RUN"}


@dataclass
class Check:
    name: str
    status: str  # pass | fail | info | skipped
    detail: str


@dataclass
class VerifyReport:
    """What `verify` found: per-sample rows and one line per check; `passed` only when every check ran and
    none failed (a check that could not run is reported as not run, never as passed)."""

    header: list[str]
    rows: list[dict] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status not in NOT_PASSED for c in self.checks)

    def _named(self, status: str) -> list[str]:
        return [c.name for c in self.checks if c.status == status]

    def verdict(self) -> str:
        failed, not_run = self._named("fail"), self._named("skipped")
        if failed:
            return "FAILED: " + ", ".join(failed) + (f" (not run: {', '.join(not_run)})" if not_run else "")
        if not_run:
            return f"NOT VERIFIED: {', '.join(not_run)} could not run; the other checks passed"
        return "verified: every check passed"

    def text(self) -> str:
        lines = list(self.header)
        lines.append(f"  {'sample':>6}  {'start S₀':>11}  {'Σ relevance':>11}  {'ratio':>8}  {'vs float64':>10}  finite")
        for r in self.rows:
            cells = [_num(r["start"]), _num(r["relevance_sum"]), _num(r["ratio"], ".4f"), _num(r["error"], ".1e")]
            lines.append(f"  {r['sample']:>6}  {cells[0]:>11}  {cells[1]:>11}  {cells[2]:>8}  {cells[3]:>10}  "
                         + ("yes" if r["finite"] else "NO"))
        lines += [f"{LABELS[c.status]:<7} {c.name}: {c.detail}" for c in self.checks]
        lines.append(self.verdict())
        return "\n".join(lines)


def _num(value, fmt: str = ".5g") -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, fmt)
