"""Where `lrpc compile` may write: never over its source, and over an existing file only when it is an
earlier output of lrpc compile (an explained file: it has lrpc metadata) — rebuilding is the usual case —
unless the user says `--overwrite`. `--format savedmodel` keeps its own rule (savedmodel.py: an existing
SavedModel folder is replaced, any other path refused); the source check applies to it too.
"""

from __future__ import annotations

import os

from lrpc_runtime.metadata import KEY_RELEVANCE

from .errors import LrpcError
from .describe import explained_metadata


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(source, out: str, overwrite: bool, savedmodel: bool = False) -> None:
    """Raise LrpcError when writing `out` would replace the source model `source` or a file that is not an
    explained one, unless `overwrite`; `source` may be a path or a model in memory (no source check)."""
    if not os.path.lexists(out):
        return
    if isinstance(source, (str, os.PathLike)) and _same(os.fspath(source), out):
        if overwrite:
            return
        raise LrpcError(
            f"-o {out} is the source model {os.fspath(source)}: compiling would replace it; choose "
            "another output path (or add --overwrite to replace the source)"
        )
    if savedmodel:
        return
    if os.path.isdir(out):
        raise LrpcError(f"-o {out} is a folder; give a file path (a folder is written only by --format savedmodel)")
    if not overwrite and not explained_metadata(out).get(KEY_RELEVANCE):
        raise LrpcError(
            f"-o {out} exists and is not an explained file (lrpc compile's output, with lrpc metadata); "
            "add --overwrite to replace it, or choose another path"
        )
