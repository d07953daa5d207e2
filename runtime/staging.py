"""Writing outputs all or nothing, and never over the user's own files.

An output folder is built in a hidden staging folder beside it, ``.OUT.HOST-PID.XXXXXXXX.partial``,
and published with one rename when it is complete: onto a missing or empty ``OUT`` a plain rename, onto a
non-empty one (only with ``overwrite``) an atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere
the old folder is first renamed aside), after which the old folder, now at the staging path, is removed.
SIGINT, SIGTERM and SIGHUP are held back during the publishing renames (and raised after them), so an
interrupted run leaves either the old folder or the new one, never a mix; likewise while the staging
folder is made and while it (or the old folder, after an exchange) is removed, so none is left behind.

Staging names carry the host and pid of the process writing them: a run killed outright (SIGKILL, the
OOM killer) cannot clean up, so the next run into the same place removes staging left by processes of
this host that are no longer alive (:func:`remove_stale`). ``lrpc compile``'s temporary files use the same
names (suffix ``.tmp``).

Example::

    >>> with staged_folder(Path("out"), overwrite=False) as staging:   # doctest: +SKIP
    ...     (staging / "a.txt").write_text("done")                     # out/ appears only now, complete
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "check_out_dir",
    "guard_inputs",
    "owner_tag",
    "remove_stale",
    "signals_deferred",
    "staged_folder",
    "staging_prefix",
]

FOLDER_SUFFIX = ".partial"
HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def owner_tag() -> str:
    """``HOST-PID`` of this process, as staging names record it."""
    return f"{socket.gethostname()}-{os.getpid()}"


def staging_prefix(name: str) -> str:
    """The start of this process's staging names for an output called ``name``."""
    return f".{name}.{owner_tag()}."


def stale_pid(entry: str, name: str, suffix: str, host: str) -> int | None:
    """The pid that wrote staging ``entry`` for output ``name`` on ``host`` (None: not such a name).

    Example::

        >>> stale_pid(".out.box-42.ab_cd123.partial", "out", ".partial", "box")
        42
        >>> stale_pid(".out.other-42.ab_cd123.partial", "out", ".partial", "box") is None
        True
    """
    start = f".{name}."
    if not (entry.startswith(start) and entry.endswith(suffix)):
        return None
    owner, dot, rand = entry[len(start) : len(entry) - len(suffix)].rpartition(".")
    entry_host, dash, pid = owner.rpartition("-")
    if not (dot and dash and rand and pid.isdigit()) or entry_host != host:
        return None
    return int(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists here (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale(folder: Path, name: str, suffix: str) -> list[Path]:
    """Remove the staging files and folders for ``name`` in ``folder`` left by dead processes of this host."""
    host, removed = socket.gethostname(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        pid = stale_pid(entry.name, name, suffix, host)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def guard_inputs(out_dir: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an ``out_dir`` that is an input, holds one, or lies inside an input folder (ValueError)."""
    out = _real(out_dir)
    for given in inputs:
        source = _real(given)
        if source == out:
            relation = "is"
        elif out in source.parents:
            relation = "contains"
        elif source in out.parents:
            relation = "is inside"
        else:
            continue
        raise ValueError(
            f"-o {out_dir} {relation} the input {os.fspath(given)}: the results would replace or mix "
            "with the files they explain; choose an output folder outside the inputs"
        )


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``out_dir`` that is a file, or a non-empty folder without ``overwrite`` (ValueError)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and not overwrite and any(os.scandir(out_dir)):
        raise ValueError(
            f"{out_dir}: the output folder exists and is not empty; add --overwrite (overwrite=True) "
            "to replace it as a whole, or choose another folder"
        )


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP for the block (the publishing renames): each one that arrives is
    raised again, to its own handler, when the block ends. Python runs signal handlers in the main thread
    only, so elsewhere nothing needs holding back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {number: signal.getsignal(number) for number in HELD_SIGNALS}
    for number, handler in previous.items():
        if handler not in (signal.SIG_IGN, None):
            signal.signal(number, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler not in (signal.SIG_IGN, None):
                signal.signal(number, handler)
        for number in arrived:
            signal.raise_signal(number)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


def _swap_aside(staging: Path, out_dir: Path) -> None:
    """Without an atomic exchange: the old folder renamed to a staging name, the new one into its place,
    and staging's path then holds the old folder (the old one put back if the second rename fails)."""
    aside = Path(tempfile.mkdtemp(prefix=staging_prefix(out_dir.name), suffix=FOLDER_SUFFIX, dir=out_dir.parent))
    os.replace(out_dir, aside)  # onto the empty folder mkdtemp made
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(aside, out_dir)
        raise
    os.replace(aside, staging)


def publish(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Put the complete ``staging`` folder at ``out_dir`` with one rename (see the module docstring)."""
    try:
        os.rename(staging, out_dir)  # out_dir missing or an empty folder
        return
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if not overwrite:
        raise ValueError(
            f"{out_dir}: files appeared in the output folder during the run; nothing was written "
            "(add --overwrite to replace it)"
        )
    if not _exchange(staging, out_dir):
        _swap_aside(staging, out_dir)


def make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the folders this call created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        created.append(path)
    return created[::-1]


def remove_created(created: Sequence[Path]) -> None:
    """Remove the folders :func:`make_parents` made, deepest first, while they are empty."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return


@contextmanager
def staged_folder(out_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """A hidden staging folder beside ``out_dir`` to write into, published at ``out_dir`` when the block
    ends without an error; on any error or signal the staging folder, and any parent folder created for
    it, is removed. Signals are held back while folders are made and removed, so that none is left half
    made or half removed (a signal there is raised when that step is done)."""
    out_dir = _real(out_dir) if out_dir.is_symlink() else out_dir  # publish into the folder a link points at
    created: list[Path] = []
    staging: Path | None = None
    published = False
    try:
        with signals_deferred():
            created = make_parents(out_dir.parent)
            remove_stale(out_dir.parent, out_dir.name, FOLDER_SUFFIX)
            staging = Path(
                tempfile.mkdtemp(prefix=staging_prefix(out_dir.name), suffix=FOLDER_SUFFIX, dir=out_dir.parent)
            )
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the results are ordinary files
        with signals_deferred():
            publish(staging, out_dir, overwrite)
            published = True
    finally:
        with signals_deferred():
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)  # after an exchange it holds the old folder
            if not published:
                remove_created(created)
