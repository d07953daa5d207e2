"""What `lrpc verify` found, and how it reads: one row per sample, one line per check, one verdict.

A check's status is one of

    pass             it ran and held
    fail             it ran and did not hold
    ill-conditioned  the float64 check missed its tolerance by no more than float32 rounding of the
                     inputs and weights explains (verify/conditioning.py): not a pass, not a wrong graph
    info             reported, not judged (conservation where LRP does not conserve exactly)
    skipped          it could not run (printed NOT RUN): never a pass

`passed` holds only when every check ran and none failed or was ill-conditioned. The verdict names the
worst outcome: FAILED, then ILL-CONDITIONED, then NOT VERIFIED, else "verified: every check passed".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NOT_PASSED = ("fail", "ill-conditioned", "skipped")
LABELS = {"pass": "PASS", "fail": "FAIL", "ill-conditioned": "ILL-CONDITIONED", "info": "INFO", "skipped": "NOT RUN"}


@dataclass
class Check:
    name: str
    status: str  # pass | fail | ill-conditioned | info | skipped
    detail: str
    verdict: str = ""  # an ill-conditioned check's plain-words verdict line


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

    @property
    def ill_conditioned(self) -> bool:
        """Whether a check missed only by what float32 rounding explains (and none failed outright)."""
        return not self._named("fail") and bool(self._named("ill-conditioned"))

    def _named(self, status: str) -> list[str]:
        return [c.name for c in self.checks if c.status == status]

    def verdict(self) -> str:
        failed, ill, not_run = self._named("fail"), self._named("ill-conditioned"), self._named("skipped")
        if failed:
            others = [f"ill-conditioned: {', '.join(ill)}"] * bool(ill) + [f"not run: {', '.join(not_run)}"] * bool(
                not_run
            )
            return "FAILED: " + ", ".join(failed) + (f" ({'; '.join(others)})" if others else "")
        if ill:
            return next(c.verdict for c in self.checks if c.status == "ill-conditioned") + (
                f" (not run: {', '.join(not_run)})" if not_run else ""
            )
        if not_run:
            return f"NOT VERIFIED: {', '.join(not_run)} could not run; the other checks passed"
        return "verified: every check passed"

    def text(self) -> str:
        lines = list(self.header)
        lines.append(
            f"  {'sample':>6}  {'start S₀':>11}  {'Σ relevance':>11}  {'ratio':>8}  {'vs float64':>10}  finite"
        )
        for r in self.rows:
            cells = [_num(r["start"]), _num(r["relevance_sum"]), _num(r["ratio"], ".4f"), _num(r["error"], ".1e")]
            lines.append(
                f"  {r['sample']:>6}  {cells[0]:>11}  {cells[1]:>11}  {cells[2]:>8}  {cells[3]:>10}  "
                + ("yes" if r["finite"] else "NO")
            )
        lines += [f"{LABELS[c.status]:<7} {c.name}: {c.detail}" for c in self.checks]
        lines.append(self.verdict())
        return "\n".join(lines)


def _num(value, fmt: str = ".5g") -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, fmt)
