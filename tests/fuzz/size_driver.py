"""Run `lrpc` command lines as the CLI does, each in a forked child with its memory capped, and print what
each one did as JSON: `python size_driver.py CASES.json` with CASES {id: argv}.

lrpc is imported once; each case then runs `lrpc.cli.main(argv)` in a fork of that process, with its
data memory (RLIMIT_DATA: heap and anonymous maps, not files mapped for reading) capped at what the child
uses plus HEADROOM, and SIGALRM after SECONDS. So a size that is allocated before it is checked shows as a
MemoryError (the CLI's exit 3) and a runaway loop as `killed by SIGALRM`, instead of taking the machine
down; a crash (a segfault) takes only its own case. Each result: {"status", "stdout", "stderr", "seconds"}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time

HEADROOM = 1 << 30
SECONDS = 20


def _data_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))


def _child(argv: list[str]) -> dict:
    from lrpc.cli import main

    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (_data_bytes() + HEADROOM, hard))
    signal.alarm(SECONDS)
    out, err, start = io.StringIO(), io.StringIO(), time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as stop:  # argparse's own errors
            status = stop.code
    return {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": time.monotonic() - start}


def run_case(argv: list[str]) -> dict:
    """One case in a forked child; a child that dies reports how."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result = _child(argv)
        except BaseException as error:  # noqa: BLE001 - whatever escapes is the finding
            result = {
                "status": f"escaped: {type(error).__name__}: {error}",
                "stdout": "",
                "stderr": "",
                "seconds": None,
            }
        with os.fdopen(write, "w") as pipe:
            json.dump(result, pipe)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    _, code = os.waitpid(pid, 0)
    if os.WIFSIGNALED(code):
        return {
            "status": f"killed by {signal.Signals(os.WTERMSIG(code)).name}",
            "stdout": "",
            "stderr": "",
            "seconds": None,
        }
    return json.loads(text)


if __name__ == "__main__":
    import lrpc.cli  # noqa: F401  - imported once, before the forks
    import PIL.PngImagePlugin  # noqa: F401

    cases = json.loads(open(sys.argv[1]).read())
    print(json.dumps({name: run_case(argv) for name, argv in cases.items()}))
