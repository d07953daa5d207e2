"""`verify --source`: the float64 reference becomes a fresh compile of the source model.

The source's SHA-256 must be the one the file records (lrpc.source_sha256); the fresh compile takes the
options the file records (lrpc.options, a rule map file's TOML inline, the preprocessing spec). Then

- what the outputs mean is read from the fresh compile's metadata, for the file and the reference
  alike, and the file's own entries that define it (metadata.MEANING_KEYS) must equal the fresh
  compile's: a file whose lrpc.relevance was pointed at another output fails here, where reading both
  through the file's own metadata would compare the wrong output with itself and pass;
- the bytes are compared and reported, not judged. A fresh compile by the same lrpc version can
  legitimately differ from the file: lrpc's version is not bumped for every change to what it emits
  (0.1.0 across this repository's history), and the bytes depend on onnx and onnx_ir, and for a Keras
  source on TensorFlow and tf2onnx, whose versions the file does not record. An edit of the graph is
  caught by the float64 check instead, which compares what the two compute.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import onnx

from lrpc_runtime.metadata import KEY_EXPLAINED, KEY_OPTIONS, KEY_PREPROCESS, KEY_SOURCE_SHA256, KEY_VERSION
from lrpc_runtime.preprocess import Preprocessing

from .. import __version__
from ..errors import LrpcError
from ..metadata import MEANING_KEYS, source_sha256
from ..options import CompileOptions
from .report import Check


@dataclass
class Reference:
    """What the float64 run uses (None: nothing to run against) and the metadata the outputs are read by."""

    model: onnx.ModelProto | None
    meta: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    described: str = "—"


def reference(proto: onnx.ModelProto, meta: dict[str, str], source) -> Reference:
    """The file itself, or a fresh compile of `source` with the file's options and its "source" check."""
    if source is None:
        return Reference(proto, meta, [], "this file's graph in float64 (onnx reference evaluator)")
    recorded, actual = meta.get(KEY_SOURCE_SHA256), source_sha256(source)
    if recorded != actual:
        return Reference(
            None,
            meta,
            [
                Check(
                    "source",
                    "fail",
                    f"the file was compiled from SHA-256 {recorded or '(not recorded)'}, {_named(source)} is {actual}",
                )
            ],
        )
    fresh = recompile(source, meta)
    fresh_meta = {p.key: p.value for p in fresh.metadata_props if p.key.startswith("lrpc.")}
    changed = differing_entries(meta, fresh_meta)
    same = fresh.SerializeToString(deterministic=True) == proto.SerializeToString(deterministic=True)
    check = (
        Check(
            "source",
            "fail",
            f"SHA-256 matches, but {_describe(changed, meta, fresh_meta)}: the file "
            "says its outputs mean something a compile of the source does not; they are "
            "read as the fresh compile defines them",
        )
        if changed
        else Check("source", "pass", "SHA-256 matches, the metadata is a fresh compile's; " + _bytes_note(same, meta))
    )
    return Reference(fresh, fresh_meta, [check], "a fresh compile of the source in float64 (onnx reference evaluator)")


def differing_entries(meta: dict[str, str], fresh_meta: dict[str, str]) -> list[str]:
    """The MEANING_KEYS whose value (or absence) in the file is not the fresh compile's."""
    return [k for k in MEANING_KEYS if meta.get(k) != fresh_meta.get(k)]


def lacking(proto: onnx.ModelProto, expected: onnx.ModelProto, meta: dict[str, str]) -> list[str]:
    """The outputs of `expected` (a fresh compile) and the explained tensor `meta` names that the file lacks."""
    outputs = {o.name for o in proto.graph.output}
    produced = outputs | {i.name for i in proto.graph.input} | {o for n in proto.graph.node for o in n.output}
    names = [o.name for o in expected.graph.output if o.name not in outputs]
    return names + ([meta[KEY_EXPLAINED]] if meta[KEY_EXPLAINED] not in produced else [])


def _describe(changed: list[str], meta: dict[str, str], fresh_meta: dict[str, str]) -> str:
    show = lambda v: "(absent)" if v is None else repr(v if len(v) <= 60 else v[:57] + "...")
    values = "; ".join(f"{k}: file {show(meta.get(k))}, fresh {show(fresh_meta.get(k))}" for k in changed)
    return (
        f"the file's {', '.join(changed)} {'entry differs' if len(changed) == 1 else 'entries differ'} "
        f"from a fresh compile's ({values})"
    )


def _bytes_note(same: bool, meta: dict[str, str]) -> str:
    if same:
        return "a fresh compile is byte-identical to the file"
    return (
        f"a fresh compile's bytes differ from the file's (written by lrpc {meta.get(KEY_VERSION)}, this is "
        f"lrpc {__version__}; not judged: they also depend on onnx, onnx_ir and tf2onnx versions the file "
        "does not record — the float64 check compares what the two compute)"
    )


def _named(source) -> str:
    return "the source" if isinstance(source, (bytes, bytearray)) else os.fspath(source)


def recompile(source, meta) -> onnx.ModelProto:
    """`source` compiled with the options the file records."""
    from ..api import compile as compile_model

    if KEY_OPTIONS not in meta:
        raise LrpcError("the file records no lrpc.options (compiled by an older lrpc): cannot recompile its source")
    preprocess = meta.get(KEY_PREPROCESS) and Preprocessing.from_json(meta[KEY_PREPROCESS])
    with tempfile.TemporaryDirectory() as folder:
        options = CompileOptions.from_record(meta[KEY_OPTIONS], preprocess, folder)
        return compile_model(source, **options.as_dict())
