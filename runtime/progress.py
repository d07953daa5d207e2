"""A one-line progress bar on stderr, drawn only when it is a terminal (logs stay clean).

    explaining  48/120 [########............]  40%  310/s

Example::

    >>> import io
    >>> with Progress(3, "explaining", stream=io.StringIO()) as bar:
    ...     bar.advance(3)
    >>> bar.done
    3
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

WIDTH = 24


def bar_line(label: str, done: int, total: int, rate: float) -> str:
    """The text of the bar for ``done`` of ``total`` items at ``rate`` items per second.

    Example::

        >>> bar_line("explaining", 5, 10, 2.0)
        'explaining  5/10 [############............]  50%  2.0/s'
    """
    filled = WIDTH * done // max(total, 1)
    digits = len(str(total))
    speed = f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s"
    return (
        f"{label} {done:>{digits}}/{total} [{'#' * filled}{'.' * (WIDTH - filled)}] "
        f"{100 * done // max(total, 1):>3}%  {speed}"
    )


class Progress:
    """Counts work done and redraws the bar in place; ``enabled=None`` draws only on a terminal."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._start = time.perf_counter()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.enabled:
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            self.stream.write("\r" + bar_line(self.label, self.done, self.total, self.done / elapsed))
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
