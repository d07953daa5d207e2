"""SIGINT, SIGTERM and SIGHUP as exceptions in the CLI, so that every `finally` runs: temporary files and
staging folders are removed, and the CLI prints one line instead of dying silently or with a traceback.

While a command runs (:func:`signals_raise`), SIGINT raises KeyboardInterrupt and SIGTERM and SIGHUP raise
:class:`Interrupted`, a KeyboardInterrupt that knows its signal. Before and after a command — while
`import lrpc` and the CLI's imports run (about 1.5 s), and while the process exits — nothing is being
written, and in the lrpc program :func:`lrpc.startup.quiet_start` (the first thing `import lrpc` runs)
makes the three signals end the process at once with the same one line and exit status 128 + N (a
KeyboardInterrupt there would print a traceback from inside an import). A signal the caller ignores (`nohup`
ignores SIGHUP) stays ignored; lrpc imported as a library changes no signal handler outside
:func:`signals_raise`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from .startup import STOPPING, exit_at_once, in_main_thread, interrupted_line


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


def _raising(number: int, handler):
    """The handler for a command's duration: exceptions in place of the defaults and of quiet_start's."""
    if handler == signal.SIG_DFL or handler is exit_at_once:
        return signal.default_int_handler if number == signal.SIGINT else _raise
    return handler


@contextmanager
def signals_raise() -> Iterator[None]:
    """For the block: SIGINT raises KeyboardInterrupt, SIGTERM and SIGHUP raise Interrupted (where they had
    their default action, or quiet_start's); the handlers before it come back afterwards."""
    if not in_main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOPPING}
    changed = {n: h for n, h in previous.items() if _raising(n, h) is not h}
    for number, handler in changed.items():
        signal.signal(number, _raising(number, handler))
    try:
        yield
    finally:
        for number, handler in changed.items():
            signal.signal(number, handler)


def interrupted(error: KeyboardInterrupt) -> tuple[str, int]:
    """(the line the CLI prints, the exit status 128 + N) for an interruption by signal N."""
    number = getattr(error, "signum", signal.SIGINT)
    return interrupted_line(number), 128 + number
