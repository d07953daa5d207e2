"""SIGINT, SIGTERM and SIGHUP as exceptions in the CLI, so that every `finally` runs: temporary files and
staging folders are removed, and the CLI prints one line instead of dying silently or with a traceback.

While a command runs (:func:`signals_raise`), SIGINT raises KeyboardInterrupt and SIGTERM and SIGHUP raise
:class:`Interrupted`, a KeyboardInterrupt that knows its signal. Before and after a command — while
`import lrpc` and the CLI's imports run (about 1.5 s), and while the process exits — nothing is being
written, and in the lrpc program (:func:`lrpc_program`) :func:`quiet_start` makes the three signals end
the process at once with the same one line and exit status 128 + N (a KeyboardInterrupt there would print
a traceback from inside an import). A signal the caller ignores (`nohup` ignores SIGHUP) stays ignored;
lrpc imported as a library changes no signal handler outside :func:`signals_raise`.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager

# This module runs first in `import lrpc`: until quiet_start, a signal still gives a traceback, so it imports
# only what is loaded already (contextlib) or must be (signal); typing's constant, without typing (2–3 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

STOPPING = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
PROGRAM_MODULES = ("lrpc.cli", "lrpc")
OPTIONS_WITH_VALUE = ("-X", "-W", "--check-hash-based-pycs")  # python options whose value follows
GUARDED: set[str] = set()  # modules that called quiet_start (tests read it)


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


def interrupted_line(signum: int) -> str:
    """What the CLI prints on stderr when a signal stops it."""
    return f"lrpc: interrupted by {signal.Signals(signum).name}; no partial output left\n"


def _exit_at_once(signum, frame) -> None:
    """End the process now (nothing is being written): the one line, exit status 128 + N."""
    try:
        sys.stdout.flush()  # what a finished command printed
    except BaseException:  # a flush already under way (the signal came inside a write)
        pass
    os.write(2, interrupted_line(signum).encode())
    os._exit(128 + signum)


def _in_main_thread() -> bool:
    """Only the main thread can set signal handlers. Without `threading` imported no thread of its making
    runs, and importing it here would lengthen the import window."""
    threading = sys.modules.get("threading")
    return threading is None or threading.current_thread() is threading.main_thread()


def lrpc_program(orig_argv: Sequence[str], argv0: str) -> bool:
    """Whether the process is the lrpc program: `python [options] -m lrpc.cli|lrpc …` (from
    ``sys.orig_argv``), or the `lrpc` console script (``sys.argv[0]``).

    Example::

        >>> lrpc_program(["python", "-X", "importtime", "-m", "lrpc.cli", "explain"], "-m")
        True
        >>> lrpc_program(["python", "-m", "mytool"], "-m"), lrpc_program(["python", "x.py"], "x.py")
        (False, False)
        >>> lrpc_program(["/venv/bin/python", "/venv/bin/lrpc", "compile"], "/venv/bin/lrpc")
        True
    """
    i = 1
    while i < len(orig_argv) and orig_argv[i].startswith("-") and orig_argv[i] not in ("-", "-c"):
        item = orig_argv[i]
        if item.startswith("-m"):
            return (item[2:] or (orig_argv[i + 1] if i + 1 < len(orig_argv) else "")) in PROGRAM_MODULES
        i += 2 if item in OPTIONS_WITH_VALUE else 1
    return os.path.basename(argv0).removesuffix(".exe") == "lrpc"


def quiet_start(module: str) -> None:
    """In the lrpc program only, from now on: SIGINT, SIGTERM and SIGHUP, where they have their default
    handlers, end the process at once with the CLI's one line (see the module docstring). Called first
    thing by the package (`import lrpc` is most of the CLI's start-up); ``module`` is the caller's name."""
    GUARDED.add(module)
    if not _in_main_thread():
        return
    if not lrpc_program(getattr(sys, "orig_argv", []), sys.argv[0] if sys.argv else ""):
        return
    for number in STOPPING:
        if signal.getsignal(number) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(number, _exit_at_once)


def _raising(number: int, handler):
    """The handler for a command's duration: exceptions in place of the defaults and of quiet_start's."""
    if handler == signal.SIG_DFL or handler is _exit_at_once:
        return signal.default_int_handler if number == signal.SIGINT else _raise
    return handler


@contextmanager
def signals_raise() -> Iterator[None]:
    """For the block: SIGINT raises KeyboardInterrupt, SIGTERM and SIGHUP raise Interrupted (where they had
    their default action, or quiet_start's); the handlers before it come back afterwards."""
    if not _in_main_thread():
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
