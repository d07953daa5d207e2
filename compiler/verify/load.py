"""The explained file verify is given: a path, bytes or a ModelProto, and its lrpc.* metadata.

A file is an explained one when its metadata names the relevance outputs (lrpc.relevance), the target
(lrpc.target) and the explained tensor (lrpc.explained); metadata.py lists every entry.
"""

from __future__ import annotations

import os

import onnx

from ..errors import LrpcError


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
    if not os.path.isfile(path):
        raise LrpcError(f"{path}: no such file")
    try:
        return onnx.load(path), path
    except Exception as e:
        raise LrpcError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None


def lrpc_metadata(proto: onnx.ModelProto, where: str) -> dict[str, str]:
    """The file's lrpc.* entries; an error when it is not an explained file."""
    meta = {p.key: p.value for p in proto.metadata_props if p.key.startswith("lrpc.")}
    missing = [k for k in ("lrpc.relevance", "lrpc.target", "lrpc.explained") if k not in meta]
    if missing:
        raise LrpcError(f"{where} is not an explained file (no {', '.join(missing)} in its metadata); "
                        "verify the file `lrpc compile` writes")
    return meta
