"""Emitter: pin opset and IR version, name the relevance outputs, check, and save atomically.

The explained graph keeps the model's inputs and outputs and appends one relevance output per
explained model input (a float input, or token ids at their embedding lookups: text.py), of that
input's shape: `relevance` for a single explained input, else `relevance_<input name>`; a token
input compiled with per_feature also gets `<that name>_per_feature` [batch, seq, hidden]. What was
compiled is recorded in the file's metadata_props.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import onnx
import onnx_ir as ir
from lrpc_runtime.metadata import KEY_EXECUTION_ORDER, KEY_RELEVANCE, KEY_VERSION
from lrpc_runtime.staging import remove_stale, signals_deferred, staging_prefix

from .errors import LrpcError
from .passes.matmul_add_to_gemm import unflattened_forward
from .passes.quantized import fusable_forward
from .schedule import order_by_level, runs_best_in_file_order

DEFAULT_OPSET = 17
MIN_OPSET = 16  # ScatterElements with reduction="add" (MaxPool's rule)
MAX_OPSET = 26  # the newest opset onnxruntime 1.31 runs
MAX_IR_VERSION = 13
_PROTOBUF_LIMIT = 2**31 - 1


def choose_opset(requested: int | None, source: int) -> int:
    opset = requested if requested is not None else max(DEFAULT_OPSET, source)
    if opset < source:
        raise LrpcError(
            f"--opset {opset}: the model uses opset {source}, and lrpc does not downgrade "
            f"models; choose {source} or newer"
        )
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise LrpcError(
            f"--opset {opset}: lrpc emits opsets {MIN_OPSET}–{MAX_OPSET} "
            f"({MAX_OPSET} is the newest onnxruntime 1.31 accepts)"
        )
    return opset


def ir_version_for(opset: int) -> int:
    """The oldest IR version that carries `opset` (opset 17 → IR 8), so older runtimes load it."""
    versions = [ir_v for _, ir_v, op, *_ in onnx.helper.VERSION_TABLE if op is not None and op >= opset]
    return min(min(versions, default=MAX_IR_VERSION), MAX_IR_VERSION)


def relevance_output_name(graph_inputs: list[ir.Value], value: ir.Value) -> str:
    return "relevance" if len(graph_inputs) == 1 else f"relevance_{value.name}"


def finish(
    model: ir.Model, relevance: dict, opset: int, metadata: dict, b, check: bool = True, extra_outputs=()
) -> onnx.ModelProto:
    """Add the relevance outputs (zeros for an input no relevance reaches) and serialize; with `check`, run
    the ONNX checker on the result (`save(..., check=True)` checks the written file instead, 2.5× faster).
    An integer input of token ids gets its relevance in the float type of the activations (text.py);
    `extra_outputs` are further (name, value, shape) outputs, e.g. a token input's per-feature map."""
    graph = model.graph
    inputs = [v for v in relevance]
    names = {}
    b.scope = "lrp/outputs"
    for x, r in relevance.items():
        dtype = x.dtype if x.dtype.is_floating_point() else b.dtype
        if r is None:
            r = b.op("ConstantOfShape", b.op("Shape", x), value=ir.tensor(np.zeros(1, dtype.numpy())))
        names[x.name] = _output(graph, b, r, relevance_output_name(inputs, x), x.shape, dtype).name
    for name, r, shape in extra_outputs:
        _output(graph, b, r, name, shape, b.dtype)
    b.drop_unused()
    unflattened_forward(graph, set(b.added))  # a flattened layer's forward as the model had it
    fusable_forward(graph, b)  # a QDQ model's forward as onnxruntime fuses it (passes/quantized.py)
    model.opset_imports[""] = opset
    model.ir_version = ir_version_for(opset)
    model.producer_name, model.producer_version = "lrpc", metadata[KEY_VERSION]
    model.metadata_props.update({**metadata, KEY_RELEVANCE: json.dumps(names)})
    proto = ir.serde.serialize_model(model)
    order_by_level(proto.graph)  # the order onnxruntime keeps least alive in (schedule.py)
    if runs_best_in_file_order(proto):  # else onnxruntime's own order keeps less (schedule.py)
        proto.metadata_props.add(key=KEY_EXECUTION_ORDER, value="file")
    if check and payload_bytes(proto) < _PROTOBUF_LIMIT:  # a larger one is checked when saved
        _check(proto)
    return proto


def _output(graph: ir.Graph, b, r: ir.Value, name: str, shape, dtype) -> ir.Value:
    _claim(graph, b, name)
    out = b.op("Identity", r)
    out.name, out.shape, out.dtype = name, shape, dtype
    graph.outputs.append(out)
    return out


def _claim(graph: ir.Graph, b, name: str) -> None:
    """Free `name` for a relevance output: a tensor of the model's own inside the graph takes a fresh name;
    one of its inputs or outputs (its interface) is refused."""
    if any(v.name == name for v in (*graph.inputs, *graph.outputs)):
        raise LrpcError(
            f"the model has an input or output named '{name}', the name lrpc gives its relevance "
            "output; rename it in the model (or compile the model an explained file came from)"
        )
    holders = [
        v for v in (*graph.initializers.values(), *(v for node in graph for v in node.outputs)) if v.name == name
    ]
    for value in holders:
        value.name = b.fresh_name(name)


def payload_bytes(proto: onnx.ModelProto) -> int:
    """The initializers' size from their dims (ModelProto.ByteSize() takes ~1 s on VGG-16)."""
    return sum(
        int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        for t in proto.graph.initializer
    )


def _check(model) -> None:
    """The ONNX checker (full: with shape inference) on a ModelProto or a saved file's path."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise LrpcError(
            f"internal error: the explained graph fails the ONNX checker ({e}); please report it with the model"
        ) from e


def save(proto: onnx.ModelProto, path, check: bool = False) -> None:
    """Write `path` atomically: a temporary file beside it, renamed into place when complete (and, with
    `check`, when the written file passes the ONNX checker). Temporary files are `.NAME.HOST-PID.XXXX.tmp`
    (the external data of a model over 2 GB is a second one), removed on any error or caught signal; one
    left by a killed process is removed by the next save here. The data file and the model are renamed
    into place together, with signals held back in between."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    external = payload_bytes(proto) >= _PROTOBUF_LIMIT - (64 << 20)  # graph and metadata: well under 64 MiB
    remove_stale(folder, os.path.basename(path), ".tmp")
    staged = []
    try:
        tmp = _staging_file(folder, path, staged)
        data_name = os.path.basename(path) + ".data"
        if external:
            data_tmp = _staging_file(folder, path, staged)
            onnx.save_model(
                proto,
                tmp,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=os.path.basename(data_tmp),
            )
        else:
            onnx.save_model(proto, tmp)
        if check:
            _check(tmp)
        holds_data = external and os.path.getsize(data_tmp) > 0  # else every tensor stayed inline
        if holds_data:
            _retarget_external(tmp, data_name)
        with signals_deferred():
            if holds_data:
                os.replace(data_tmp, os.path.join(folder, data_name))
            os.replace(tmp, path)
    except BaseException as e:
        for leftover in staged:
            if os.path.exists(leftover):
                os.remove(leftover)
        if isinstance(e, OSError):
            raise LrpcError(f"cannot write {path}: {e.strerror or e}; nothing was written") from e
        raise


def _staging_file(folder: str, path: str, staged: list) -> str:
    """A new empty `.NAME.HOST-PID.XXXX.tmp` beside `path`, with the umask's mode (mkstemp makes it private;
    the explained file is an ordinary output), appended to `staged`."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=staging_prefix(os.path.basename(path)), suffix=".tmp", dir=folder)
    except OSError as e:
        raise LrpcError(
            f"cannot write {path}: {e.strerror} ({folder}); choose a folder that exists and is writable"
        ) from e
    staged.append(tmp)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _retarget_external(model_path: str, location: str) -> None:
    proto = onnx.load_model(model_path, load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, model_path)
