"""SIGINT, SIGTERM and SIGHUP as exceptions in the CLI, so that every `finally` runs: temporary files and
staging folders are removed, and the CLI prints one line instead of dying silently or with a traceback.

SIGINT already raises KeyboardInterrupt; SIGTERM and SIGHUP raise :class:`Interrupted`, a KeyboardInterrupt
that knows its signal. A signal the caller ignores (`nohup` ignores SIGHUP) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CAUGHT = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """For the block: SIGTERM and SIGHUP raise Interrupted (where they had their default action)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in CAUGHT}
    for number, handler in previous.items():
        if handler == signal.SIG_DFL:
            signal.signal(number, _raise)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def describe(error: KeyboardInterrupt) -> tuple[str, int]:
    """(the signal's name, the exit status 128 + its number) for an interruption."""
    number = getattr(error, "signum", signal.SIGINT)
    return signal.Signals(number).name, 128 + number
