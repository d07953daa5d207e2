"""The first thing `import lrpc` runs: in the lrpc program, SIGINT, SIGTERM and SIGHUP end the process at
once with the CLI's one line, `lrpc: interrupted by SIGx; no partial output left`, and exit status 128 + N.

Until :func:`quiet_start` has run, a SIGINT is CPython's KeyboardInterrupt and prints a traceback from
inside an import; no package can act earlier than its own first line. So this module keeps that window
short: it imports only what the interpreter loaded while it started (`os`, `sys`, and `_signal`, the C
module under `signal`: the `signal` module builds enums, 0.4–0.7 ms) and defines little. Measured with
`python -X importtime -m lrpc.cli --help`: this module takes 0.12 ms with cached bytecode (0.7–1.2 ms when
it is compiled), where importing the old lrpc.signals first took 0.6 ms (1.5–2.4 ms).
"""

import _signal
import os
import sys

STOPPING = tuple(getattr(_signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(_signal, name))
NAMES = {getattr(_signal, name): name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(_signal, name)}
PROGRAM_MODULES = ("lrpc.cli", "lrpc")
OPTIONS_WITH_VALUE = ("-X", "-W", "--check-hash-based-pycs")  # python options whose value follows


def interrupted_line(signum):
    """What the CLI prints on stderr when a signal stops it."""
    return f"lrpc: interrupted by {NAMES.get(signum, f'signal {signum}')}; no partial output left\n"


def exit_at_once(signum, frame):
    """End the process now (nothing is being written): the one line, exit status 128 + N."""
    try:
        sys.stdout.flush()  # what a finished command printed
    except BaseException:  # a flush already under way (the signal came inside a write)
        pass
    os.write(2, interrupted_line(signum).encode())
    os._exit(128 + signum)


def in_main_thread():
    """Only the main thread can set signal handlers. Without `threading` imported no thread of its making
    runs, and importing it here would lengthen the window."""
    threading = sys.modules.get("threading")
    return threading is None or threading.current_thread() is threading.main_thread()


def lrpc_program(orig_argv, argv0):
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


def quiet_start():
    """In the lrpc program only, from now on: SIGINT, SIGTERM and SIGHUP, where they have their default
    handlers, end the process at once (see the module docstring); lrpc imported as a library changes no
    handler."""
    if not in_main_thread():
        return
    if not lrpc_program(getattr(sys, "orig_argv", []), sys.argv[0] if sys.argv else ""):
        return
    for number in STOPPING:
        if _signal.getsignal(number) in (_signal.SIG_DFL, _signal.default_int_handler):
            _signal.signal(number, exit_at_once)
