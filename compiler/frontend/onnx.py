"""ONNX frontend: a file or ModelProto into onnx_ir, with external weights resolved.

Accepts any exporter's output (torch.onnx legacy and dynamo, tf2onnx, hand-built), opsets 13 and up.
Weights stored as external data are read from beside the file.
"""

from __future__ import annotations

import os

import onnx
import onnx_ir as ir

from ..errors import LrpcError

MIN_OPSET = 13


def load(source) -> ir.Model:
    """Load an ONNX model from a path, bytes, a ModelProto or an ir.Model."""
    if isinstance(source, ir.Model):
        model = source
    elif isinstance(source, onnx.ModelProto):
        model = ir.serde.deserialize_model(source)
    elif isinstance(source, (bytes, bytearray)):
        model = ir.serde.deserialize_model(_parse(bytes(source), "<bytes>"))
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise LrpcError(f"{path}: no such file")
        with open(path, "rb") as f:
            proto = _parse(f.read(), path)
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, os.path.dirname(path) or ".")
        except (OSError, ValueError) as e:
            raise LrpcError(f"{path}: cannot read its external weight data ({e}); "
                            "keep the .data file beside the model") from e
        model = ir.serde.deserialize_model(proto)
    _check_opset(model)
    return model


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError, sometimes RuntimeWarning-like errors
        raise LrpcError(f"{where}: not an ONNX model ({type(e).__name__}: {e})") from e
    if not proto.graph.node and not proto.graph.output:
        raise LrpcError(f"{where}: not an ONNX model (no graph found in the file)")
    return proto


def _check_opset(model: ir.Model) -> None:
    opset = model.opset_imports.get("", None)
    if opset is None:
        raise LrpcError("the model imports no default ONNX opset; lrpc reads standard ONNX graphs")
    if opset < MIN_OPSET:
        raise LrpcError(f"the model uses opset {opset}; lrpc reads opset {MIN_OPSET} and newer. "
                        "Convert it first: onnx.version_converter.convert_version(model, 17)")
    used = {n.domain for n in model.graph.all_nodes()} - {"", "ai.onnx"}
    if used:
        raise LrpcError(f"the model uses custom operator domains {sorted(used)}; "
                        "lrpc lowers standard ONNX operators only")
