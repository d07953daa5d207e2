"""What an explained file records about itself in ONNX `metadata_props` (all keys `lrpc.*`).

    lrpc.version        the compiler's version           lrpc.rule        rule, composite or method spec
    lrpc.target         max | fixed:k | input | all | mask
    lrpc.convention     lrpc | zennit | innvestigate | lxt      lrpc.method      the gradient method, if any
    lrpc.explained      the tensor whose units start the relevance (the logits of a Softmax output)
    lrpc.output         the model output it belongs to (absent for an inner tensor, --explain)
    lrpc.classes        units per sample of the explained tensor
    lrpc.relevance      JSON: model input → relevance output (written by emit.finish)
    lrpc.relevance_outputs  JSON, for models with token-id inputs: relevance output → what it is
                        ({"input", "kind": input | token | token_feature, "shape", and for token
                        ids "vocab" and "at": the embedding lookups it sums; lrpc/text.py)
    lrpc.position       the explained position of a [batch, seq, vocab] tensor (targets.py), if any
    lrpc.preprocess     JSON: how images become inputs (lrpc_runtime.preprocess), when given
    lrpc.source_sha256  SHA-256 of the source model: its file's bytes, or its serialized form when
                        the model was given in memory
    lrpc.options        JSON: the compile options that differ from the defaults (a rule map file's
                        TOML text inline), so `lrpc verify --source` can compile the source again

No timestamps and no paths: compiling the same model with the same options gives the same bytes. Each key
is spelled once, as a KEY_* constant of lrpc_runtime.metadata (the runtime reads what the compiler writes).
"""

from __future__ import annotations

import hashlib
import json
import os

import onnx
import onnx_ir as ir

from lrpc_runtime.metadata import (
    KEY_CLASSES,
    KEY_CONVENTION,
    KEY_EXPLAINED,
    KEY_METHOD,
    KEY_OPTIONS,
    KEY_OUTPUT,
    KEY_POSITION,
    KEY_PREPROCESS,
    KEY_RELEVANCE,
    KEY_RELEVANCE_OUTPUTS,
    KEY_RULE,
    KEY_SOURCE_SHA256,
    KEY_TARGET,
    KEY_VERSION,
)
from lrpc_runtime.preprocess import Preprocessing, image_layout

from .errors import LrpcError

# The entries that say what the file's outputs mean: which tensor is explained and how, under which rules,
# from which inputs, and what each relevance output holds. `verify --source` requires a fresh compile of the
# source to write the same ones (lrpc.version may differ; lrpc.source_sha256 is checked on its own).
MEANING_KEYS = (
    KEY_RULE,
    KEY_METHOD,
    KEY_TARGET,
    KEY_CONVENTION,
    KEY_EXPLAINED,
    KEY_OUTPUT,
    KEY_CLASSES,
    KEY_RELEVANCE,
    KEY_RELEVANCE_OUTPUTS,
    KEY_POSITION,
    KEY_PREPROCESS,
    KEY_OPTIONS,
)


def source_sha256(model) -> str:
    """SHA-256 of a model path's file bytes, of bytes as given, or of a proto/IR model serialized."""
    if isinstance(model, ir.Model):
        data = ir.serde.serialize_model(model).SerializeToString(deterministic=True)
    elif isinstance(model, onnx.ModelProto):
        data = model.SerializeToString(deterministic=True)
    elif isinstance(model, (bytes, bytearray)):
        data = bytes(model)
    elif os.path.isdir(os.fspath(model)):  # a SavedModel folder: its files' relative paths and bytes
        return _folder_sha256(os.fspath(model))
    else:
        with open(os.fspath(model), "rb") as f:
            data = f.read()
    return hashlib.sha256(data).hexdigest()


def _folder_sha256(folder: str) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def checked_preprocess(spec, graph: ir.Graph) -> str | None:
    """The preprocessing spec (text or Preprocessing) as JSON, checked against the first float input."""
    if spec is None:
        return None
    try:
        parsed = spec if isinstance(spec, Preprocessing) else Preprocessing.parse(str(spec))
        image_input = next((v for v in graph.inputs if v.dtype is not None and v.dtype.is_floating_point()), None)
        if image_input is not None and image_input.shape is not None:
            shape = tuple(d if isinstance(d, int) else None for d in image_input.shape)
            _, channels, _ = image_layout(shape, parsed.layout)
            for key in ("mean", "std"):
                values = getattr(parsed, key)
                if values is not None and len(values) not in (1, channels):
                    raise ValueError(
                        f"preprocess {key}: {len(values)} values for the {channels}-channel input '{image_input.name}'"
                    )
    except ValueError as e:
        raise LrpcError(f"--preprocess: {e}") from None
    return parsed.to_json()


def file_metadata(
    *,
    version: str,
    rule_spec: str,
    target_spec: str,
    convention: str,
    explained: str,
    classes: int | None,
    output: str | None,
    method_spec: str | None,
    preprocess: str | None,
    sha256: str,
    options: str,
    relevance_outputs: dict | None = None,
    position: int | None = None,
) -> dict[str, str]:
    """The lrpc.* entries of an explained file (lrpc.relevance is added by emit.finish)."""
    meta = {
        KEY_VERSION: version,
        KEY_RULE: rule_spec,
        KEY_TARGET: target_spec,
        KEY_CONVENTION: convention,
        KEY_EXPLAINED: explained,
        **({} if classes is None else {KEY_CLASSES: str(classes)}),
        KEY_SOURCE_SHA256: sha256,
        KEY_OPTIONS: options,
    }
    if method_spec is not None:  # lrpc.rule names what the relevance output holds
        meta.update({KEY_RULE: method_spec, KEY_METHOD: method_spec})
    if output is not None:
        meta[KEY_OUTPUT] = output
    if preprocess is not None:
        meta[KEY_PREPROCESS] = preprocess
    if relevance_outputs is not None:
        meta[KEY_RELEVANCE_OUTPUTS] = json.dumps(relevance_outputs, sort_keys=True, separators=(",", ":"))
    if position is not None:
        meta[KEY_POSITION] = str(position)
    return meta
