"""`verify --source`: the float64 reference becomes a fresh compile of the source model.

The source's SHA-256 must be the one the file records (lrpc.source_sha256); the fresh compile takes the
options the file records (lrpc.options, a rule map file's TOML inline, the preprocessing spec).
"""

from __future__ import annotations

import json
import os
import tempfile

import onnx

from lrpc_runtime.preprocess import Preprocessing

from .. import __version__
from ..errors import LrpcError
from ..metadata import source_sha256
from .report import Check


def reference(proto, meta, source) -> tuple[onnx.ModelProto | None, list[Check], str]:
    """The model the float64 run uses: the file itself, or a fresh compile of `source`."""
    if source is None:
        return proto, [], "this file's graph in float64 (onnx reference evaluator)"
    recorded, actual = meta.get("lrpc.source_sha256"), source_sha256(source)
    if recorded != actual:
        return None, [Check("source", "fail", f"the file was compiled from SHA-256 {recorded or '(not recorded)'}, "
                                              f"{os.fspath(source) if not isinstance(source, bytes) else 'source'} "
                                              f"is {actual}")], "—"
    fresh = recompile(source, meta)
    same = fresh.SerializeToString(deterministic=True) == proto.SerializeToString(deterministic=True)
    version = meta.get("lrpc.version")
    note = "byte-identical to the file" if same else f"differs from the file (written by lrpc {version}, " \
                                                     f"this is lrpc {__version__})"
    checks = [Check("source", "pass", f"SHA-256 matches; a fresh compile {note}")]
    return fresh, checks, "a fresh compile of the source in float64 (onnx reference evaluator)"


def recompile(source, meta) -> onnx.ModelProto:
    """`source` compiled with the options the file records."""
    from ..api import compile as compile_model

    if "lrpc.options" not in meta:
        raise LrpcError("the file records no lrpc.options (compiled by an older lrpc): cannot recompile its source")
    options = json.loads(meta["lrpc.options"])
    options["preprocess"] = meta.get("lrpc.preprocess") and Preprocessing.from_json(meta["lrpc.preprocess"])
    toml = options.pop("rule_map_toml", None)
    with tempfile.TemporaryDirectory() as folder:
        if toml is not None:
            options["rule_map_file"] = os.path.join(folder, "rules.toml")
            with open(options["rule_map_file"], "w", encoding="utf-8") as f:
                f.write(toml)
        return compile_model(source, **options)
