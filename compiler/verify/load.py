"""The explained file verify is given: a path, bytes or a ModelProto, and its lrpc.* metadata.

A file is an explained one when its metadata names the relevance outputs (lrpc.relevance), the target
(lrpc.target) and the explained tensor (lrpc.explained); metadata.py lists every entry. The entries
verify reads are checked to be what lrpc writes — JSON where it writes JSON, a relevance output the
graph has, a whole number of classes, a target spec — so that an edited or damaged file is named as
such instead of failing deep inside a check with a parser's message.
"""

from __future__ import annotations

import json
import os
import re

import onnx

from lrpc_runtime.metadata import (
    KEY_CLASSES,
    KEY_EXPLAINED,
    KEY_OPTIONS,
    KEY_PREPROCESS,
    KEY_RELEVANCE,
    KEY_RELEVANCE_OUTPUTS,
    KEY_TARGET,
)
from lrpc_runtime.preprocess import Preprocessing

from ..errors import LrpcError

JSON_ENTRIES = (KEY_RELEVANCE, KEY_OPTIONS, KEY_PREPROCESS, KEY_RELEVANCE_OUTPUTS)
TARGET = re.compile(r"max|all|mask|input|fixed:\d+(,\d+)*")  # targets.py's specs, as lrpc.target holds them


def load(model) -> tuple[onnx.ModelProto, str]:
    """(the model, what to call it): parsed from bytes or read from a path; a ModelProto as it is."""
    if isinstance(model, onnx.ModelProto):
        return model, "<model>"
    if isinstance(model, (bytes, bytearray)):
        proto, where = onnx.ModelProto(), "<bytes>"
        try:
            proto.ParseFromString(bytes(model))
        except Exception as e:
            raise LrpcError(f"{where}: not an ONNX model ({e})") from None
        return proto, where
    path = os.fspath(model)
    if os.path.isdir(path):
        raise LrpcError(f"{path} is a folder, not an explained ONNX file")
    if not os.path.isfile(path):
        raise LrpcError(f"{path}: no such file")
    try:
        return onnx.load(path), path
    except Exception as e:
        raise LrpcError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None


def lrpc_metadata(proto: onnx.ModelProto, where: str) -> dict[str, str]:
    """The file's lrpc.* entries, checked; an error when it is not an explained file or they are damaged."""
    meta = {p.key: p.value for p in proto.metadata_props if p.key.startswith("lrpc.")}
    missing = [k for k in (KEY_RELEVANCE, KEY_TARGET, KEY_EXPLAINED) if k not in meta]
    if missing:
        raise LrpcError(
            f"{where} is not an explained file (no {', '.join(missing)} in its metadata); "
            "verify the file `lrpc compile` writes"
        )
    parsed = {key: _json(meta, key, where) for key in JSON_ENTRIES if key in meta}
    problem = _problem(meta, parsed, {o.name for o in proto.graph.output})
    if problem:
        raise damaged(where, problem[0], problem[1])
    return meta


def damaged(where: str, key: str, problem: str) -> LrpcError:
    return LrpcError(f"{where}: its {key} metadata {problem}; the file was edited or damaged — recompile it")


def _json(meta: dict[str, str], key: str, where: str):
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise damaged(where, key, f"is not valid JSON ({e})") from None


def _problem(meta: dict[str, str], parsed: dict, outputs: set[str]) -> tuple[str, str] | None:
    """(entry, what is wrong with it) for the first entry that is not what lrpc writes, else None."""
    relevance = parsed[KEY_RELEVANCE]
    if (
        not isinstance(relevance, dict)
        or not relevance
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in relevance.items())
    ):
        return KEY_RELEVANCE, "is not a JSON object of input → relevance output names"
    absent = [v for v in relevance.values() if v not in outputs]
    if absent:
        return KEY_RELEVANCE, f"names output '{absent[0]}', which the graph does not have"
    for key in (KEY_OPTIONS, KEY_RELEVANCE_OUTPUTS):
        if key in parsed and not isinstance(parsed[key], dict):
            return key, "is not a JSON object"
    entries = parsed.get(KEY_RELEVANCE_OUTPUTS, {}).values()
    if not all(isinstance(e, dict) and (e.get("kind") != "token" or _is_token_entry(e)) for e in entries):
        return KEY_RELEVANCE_OUTPUTS, "has an entry that is not {input, kind, shape[, vocab]}"
    if KEY_PREPROCESS in meta:
        try:
            Preprocessing.from_json(meta[KEY_PREPROCESS])
        except (ValueError, TypeError) as e:
            return KEY_PREPROCESS, f"is not a preprocessing spec ({e})"
    if KEY_CLASSES in meta and not (meta[KEY_CLASSES].isdigit() and int(meta[KEY_CLASSES]) >= 1):
        return KEY_CLASSES, f"'{meta[KEY_CLASSES][:40]}' is not a whole number ≥ 1"
    if not TARGET.fullmatch(meta[KEY_TARGET]):
        return (
            KEY_TARGET,
            f"'{meta[KEY_TARGET][:40]}' is not a target lrpc writes (max, all, mask, input, fixed:K)",
        )
    return None


def _is_token_entry(entry: dict) -> bool:
    return isinstance(entry.get("input"), str) and isinstance(entry.get("vocab"), int) and entry["vocab"] >= 1
