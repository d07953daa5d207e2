"""`lrpc export triton`: an explained file as a Triton Inference Server model repository.

    REPO/NAME/config.pbtxt        onnxruntime backend, dynamic batching, one instance group
    REPO/NAME/1/model.onnx        the explained file (and model.onnx.data when its weights are external)

Each input and output of the graph becomes a config entry with its Triton data type and its dims
without the batch axis (the graph's first axis, which must be dynamic): a symbolic dim is -1. A
tensor that is only [batch] (the int64 `target` of `--target input`) is declared as dims [1] with
`reshape { shape: [] }`, as Triton requires at least one dim per batched tensor.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import onnx

from lrpc_runtime.metadata import KEY_RELEVANCE

from .errors import LrpcError

TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


def _entry(value: onnx.ValueInfoProto, kind: str) -> str:
    """One `input`/`output` block of config.pbtxt, the batch axis left out."""
    tensor = value.type.tensor_type
    if tensor.elem_type not in TRITON_TYPES:
        raise LrpcError(
            f"{kind} '{value.name}' has ONNX type {onnx.TensorProto.DataType.Name(tensor.elem_type)}, "
            "which Triton's onnxruntime backend does not take"
        )
    dims = list(tensor.shape.dim)
    if not dims or dims[0].HasField("dim_value"):
        raise LrpcError(
            f"{kind} '{value.name}' has no dynamic batch axis (shape "
            f"{[d.dim_value or d.dim_param for d in dims]}); export the model with a dynamic batch "
            "or serve it with --max-batch 0"
        )
    rest = [d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]]
    lines = [f'    name: "{value.name}"', f"    data_type: {TRITON_TYPES[tensor.elem_type]}"]
    if rest:
        lines.append(f"    dims: [ {', '.join(map(str, rest))} ]")
    else:
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "  {\n" + "\n".join(lines) + "\n  }"


def config_text(model: onnx.ModelProto, name: str, max_batch: int, gpu: bool, instances: int = 1) -> str:
    """config.pbtxt for `model` served as `name` (a batched model: max_batch ≥ 1)."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    blocks = [
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch}",
        "input [\n" + ",\n".join(_entry(v, "input") for v in inputs) + "\n]",
        "output [\n" + ",\n".join(_entry(v, "output") for v in model.graph.output) + "\n]",
        "dynamic_batching { }",
        f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]",
    ]
    return "\n".join(blocks) + "\n"


def export_triton(
    explained: str | os.PathLike,
    repo: str | os.PathLike,
    name: str | None = None,
    max_batch: int = 8,
    gpu: bool = False,
) -> str:
    """Write REPO/NAME (config.pbtxt, 1/model.onnx) for an explained file; returns the model folder.

    >>> export_triton("explained.onnx", "models", name="digits", max_batch=32)   # doctest: +SKIP
    'models/digits'
    """
    explained = os.fspath(explained)
    if not os.path.isfile(explained):
        raise LrpcError(f"{explained}: no such file")
    try:
        model = onnx.load(explained, load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise LrpcError(f"{explained}: not an ONNX model ({type(e).__name__})") from e
    if not any(p.key == KEY_RELEVANCE for p in model.metadata_props):
        raise LrpcError(f"{explained}: not an explained file (no lrpc.relevance metadata); run lrpc compile first")
    if max_batch < 1:
        raise LrpcError("--max-batch must be ≥ 1 (the explained graph's batch axis is dynamic)")
    name = name or os.path.splitext(os.path.basename(explained))[0]
    if not name or "/" in name or name.startswith("."):
        raise LrpcError(f"model name '{name}' must be a plain folder name")
    target = os.path.join(os.fspath(repo), name)
    if os.path.exists(target):
        raise LrpcError(f"{target} exists already; remove it or choose another --name")
    config = config_text(model, name, max_batch, gpu)
    os.makedirs(os.fspath(repo), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=os.fspath(repo))
    try:
        os.makedirs(os.path.join(staging, "1"))
        _copy_model(explained, model, os.path.join(staging, "1"))
        with open(os.path.join(staging, "config.pbtxt"), "w", encoding="utf-8") as f:
            f.write(config)
        os.chmod(staging, 0o755)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _copy_model(path: str, model: onnx.ModelProto, folder: str) -> None:
    """model.onnx, and its external data renamed to model.onnx.data (the locations rewritten to match)."""
    locations = {
        e.value
        for t in onnx.external_data_helper._get_all_tensors(model)
        for e in t.external_data
        if e.key == "location"
    }
    if not locations:
        shutil.copyfile(path, os.path.join(folder, "model.onnx"))
        return
    if len(locations) > 1:
        raise LrpcError(
            f"{path}: its weights are spread over {len(locations)} external files; lrpc compile writes "
            "one — recompile it"
        )
    source = os.path.join(os.path.dirname(path) or ".", locations.pop())
    shutil.copyfile(source, os.path.join(folder, "model.onnx.data"))
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "model.onnx.data"
    onnx.save(model, os.path.join(folder, "model.onnx"))
