"""ONNX frontend: a file or ModelProto into onnx_ir, with external weights resolved.

Accepts any exporter's output (torch.onnx legacy and dynamo, tf2onnx, hand-built), opsets 13 and up.
Weights stored as external data are read from beside the file; a location that leaves the model's
folder (`../x.data`, an absolute path, a symlink out) is refused.
"""

from __future__ import annotations

import os

import onnx
import onnx_ir as ir

from ..errors import LrpcError, root_cause
from ..passes.quantized import check_not_qoperator

MIN_OPSET = 13
MAX_OPSET = 26  # the newest opset onnxruntime 1.31 runs (emit.py pins the same)
_WANTED = (
    "lrpc reads an ONNX ModelProto file, as written by torch.onnx.export, tf2onnx or onnx.save; "
    "a truncated file or another protobuf (a bare graph or tensor) does not parse as one"
)


def load(source) -> ir.Model:
    """Load an ONNX model from a path, bytes, a ModelProto or an ir.Model."""
    if isinstance(source, ir.Model):
        model = source
    elif isinstance(source, onnx.ModelProto):
        model = _deserialize(source, "the model")
    elif isinstance(source, (bytes, bytearray)):
        model = _deserialize(_parse(bytes(source), "<bytes>"), "<bytes>")
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            raise LrpcError(
                f"{path} is a folder, not a model file: give an ONNX file (or a Keras file, or a "
                "TensorFlow SavedModel folder, which holds saved_model.pb)"
            )
        if not os.path.isfile(path):
            raise LrpcError(f"{path}: no such file")
        with open(path, "rb") as f:
            proto = _parse(f.read(), path)
        _load_external_data(proto, path)
        model = _deserialize(proto, path)
    _check_opset(model)
    return model


def _load_external_data(proto: onnx.ModelProto, path: str) -> None:
    """Read weights stored beside the model; a location outside the model's folder is refused."""
    folder = os.path.realpath(os.path.dirname(path) or ".")
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = os.path.realpath(os.path.join(folder, location))
        if os.path.isabs(location) or os.path.commonpath([folder, target]) != folder:
            resolved = (
                "" if target == os.path.normpath(os.path.join(folder, location)) else f" (it resolves to '{target}')"
            )
            raise LrpcError(
                f"{path}: the external data of weight '{tensor.name}' is at '{location}'{resolved}, "
                "outside the model's folder; lrpc refuses to read it. Keep the .data file beside the "
                "model and store its location as a plain file name"
            )
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, folder)
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise LrpcError(
            f"{path}: cannot read its external weight data ({e}); keep the .data file beside the model"
        ) from e


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError, sometimes RuntimeWarning-like errors
        raise LrpcError(f"{where}: not an ONNX model ({type(e).__name__}: {e}); {_WANTED}") from e
    if not proto.graph.node and not proto.graph.output:
        raise LrpcError(f"{where}: not an ONNX model (no graph found in the file); {_WANTED}")
    return proto


def _deserialize(proto: onnx.ModelProto, where: str) -> ir.Model:
    """onnx_ir's reading of a parsed proto; what it rejects (a value with two producers, an attribute
    name that is not UTF-8, ...) is the model's fault, reported as such."""
    try:
        return ir.serde.deserialize_model(proto)
    except ir.serde.SerdeError as e:
        cause = root_cause(e)
        raise LrpcError(
            f"{where}: not valid ONNX: {type(cause).__name__}: {cause}; "
            "check it with onnx.checker.check_model(model, full_check=True)"
        ) from e


def _check_opset(model: ir.Model) -> None:
    opset = model.opset_imports.get("", None)
    if opset is None:
        raise LrpcError("the model imports no default ONNX opset; lrpc reads standard ONNX graphs")
    if opset < MIN_OPSET:
        raise LrpcError(
            f"the model uses opset {opset}; lrpc reads opset {MIN_OPSET} and newer. "
            "Convert it first: onnx.version_converter.convert_version(model, 17)"
        )
    if opset > MAX_OPSET:
        raise LrpcError(
            f"the model uses opset {opset}; lrpc reads opsets {MIN_OPSET}–{MAX_OPSET} ({MAX_OPSET} is the "
            "newest onnxruntime 1.31 runs). Export it with an older opset (e.g. opset_version=17)"
        )
    for node in model.graph.all_nodes():  # QGemm, QLinearAdd… are com.microsoft ops: the clearer message first
        check_not_qoperator(node)
    used = {n.domain for n in model.graph.all_nodes()} - {"", "ai.onnx"}
    if used:
        raise LrpcError(
            f"the model uses custom operator domains {sorted(used)}; lrpc lowers standard ONNX operators only"
        )
