"""`lrpc compile --format savedmodel`: an explained ONNX graph as a TensorFlow SavedModel.

The SavedModel computes what the explained ONNX file computes — the model outputs and the relevance —
by walking the ONNX graph (topologically sorted) once inside a `tf.function` and turning each node
into TensorFlow ops through the table of ops.py (op type → small TF function). Nothing is
converted by pattern: a node whose op or attribute variant is not in the table stops the export with
an LrpcError that names it.

- One signature, `serving_default`. Inputs: the explained graph's inputs (the model's, and `target`,
  `mask`, `baseline` or `noise` when the compile added them), each named like its ONNX input. Outputs:
  every output of the explained graph under its ONNX name — the model outputs, then `relevance` (or
  `relevance_<input>`) — with characters outside [A-Za-z0-9_] replaced by '_' ('Identity:0' →
  'Identity_0'). Symbolic dimensions (the batch) are None in the signature.
- Nodes computed from weights alone (W⁺ = Relu(W), …) are evaluated once at export; the results and
  the initializers become constants, those over 1024 values as variables (the checkpoint beside the
  graph, so a large model stays under the 2 GB graph limit).
- `assets.extra/lrpc.json` keeps the file's lrpc metadata and the ONNX → signature name map.
- Written to a temporary folder beside the target and moved into place when complete.

TensorFlow is imported only here, and only when asked for; without it, `--format savedmodel` is a
user error with the install line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import LrpcError, node_label
from ..ops import RANDOM_OPS

INSTALL = 'pip install "lrpc[keras]"'
VARIABLE_MIN_SIZE = 1024  # constants with more values become variables (stored in the checkpoint)


def require_tensorflow():
    """The tensorflow module, or the user error saying how to install it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up notes would sit above lrpc's one line
    try:
        import tensorflow as tf
    except ImportError as e:
        raise LrpcError(
            f"--format savedmodel needs TensorFlow, which is not installed ({e.name or e}): {INSTALL}"
        ) from None
    return tf


def signature_name(onnx_name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", onnx_name)
    return name if name and not name[0].isdigit() else f"t_{name}"


def signature_names(names: list[str]) -> dict[str, str]:
    """ONNX name → a distinct signature key."""
    result, used = {}, set()
    for name in names:
        key, n = signature_name(name), 1
        while key in used:
            n += 1
            key = f"{signature_name(name)}_{n}"
        used.add(key)
        result[name] = key
    return result


def export_savedmodel(model, directory) -> dict:
    """Write `model` (an explained ModelProto or its path) as a SavedModel folder at `directory`;
    returns the name map {"inputs": {onnx: key}, "outputs": {onnx: key}}."""
    tf = require_tensorflow()
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
    module, names = build_module(tf, proto)
    _save_atomically(
        tf, module, os.fspath(directory), {"names": names, "metadata": {p.key: p.value for p in proto.metadata_props}}
    )
    return names


def op_table() -> dict:
    """ONNX op type → TensorFlow function (importing the table imports TensorFlow)."""
    from . import norms, quantized, shape, spatial  # noqa: F401  (they fill the table)
    from .ops import TF_OPS

    return TF_OPS


def check_supported(graph, table) -> None:
    """Refuse, before any tracing, a node whose op type the table lacks."""
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in table:
            raise LrpcError(
                f"{node_label(node)}: the TensorFlow export has no function for "
                f"{node.domain + '.' if node.domain else ''}{node.op_type} (it covers "
                f"{len(table)} ONNX ops: {', '.join(sorted(table))}); use --format onnx for this "
                "model, or report the op"
            )


def build_module(tf, proto):
    """A tf.Module whose `serve` computes the graph's outputs from its inputs, and the name map."""
    graph = proto.graph
    check_supported(graph, op_table())
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    folded = fold_constants(tf, graph)
    remaining = [n for n in graph.node if not all(name in folded for name in n.output if name)]
    used = {name for n in remaining for name in n.input} | {v.name for v in graph.output}
    constants = {k: v for k, v in folded.items() if k in used}
    module = tf.Module()
    large = [k for k, v in constants.items() if v.size > VARIABLE_MIN_SIZE]
    module.weights = [tf.Variable(constants[k], trainable=False, name=f"constant_{i}") for i, k in enumerate(large)]
    variables = dict(zip(large, module.weights))
    in_names = signature_names([v.name for v in inputs])
    out_names = signature_names([v.name for v in graph.output])
    specs = [tf.TensorSpec(_signature_shape(v), _tf_type(tf, v), name=in_names[v.name]) for v in inputs]

    shapes = inferred_shapes(proto)

    def serve(*tensors):
        values = {k: variables[k] if k in variables else tf.constant(v) for k, v in constants.items()}
        values.update({v.name: t for v, t in zip(inputs, tensors)})
        run_nodes(tf, remaining, values, shapes)
        return {out_names[v.name]: tf.identity(values[v.name], name=out_names[v.name]) for v in graph.output}

    module.serve = tf.function(serve, input_signature=specs, autograph=False)
    module.serve.get_concrete_function()  # trace now: a table error surfaces before anything is written
    return module, {"inputs": in_names, "outputs": out_names}


def fold_constants(tf, graph) -> dict[str, np.ndarray]:
    """Initializers, and the outputs of nodes computed from constants only (not random draws), evaluated."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type in RANDOM_OPS or not all(name == "" or name in values for name in node.input):
            continue
        args = {name: tf.constant(values[name]) for name in node.input if name}
        run_nodes(tf, [node], args)
        values.update({name: args[name].numpy() for name in node.output if name})
    return values


def inferred_shapes(proto) -> dict[str, list]:
    """Each value's shape from ONNX shape inference (None for a symbolic dimension), where its rank is known.

    TensorFlow loses static sizes through shape arithmetic (a Reshape to a computed shape); setting
    them back lets the spatial ops see what ONNX knows. A model too large to infer gets none."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # noqa: BLE001  (over 2 GB, or a graph onnx cannot infer: static shapes are a bonus)
        return {}
    return {
        v.name: _signature_shape(v)
        for v in [*inferred.graph.value_info, *inferred.graph.output]
        if v.type.tensor_type.HasField("shape")
    }


def run_nodes(tf, nodes, values: dict, shapes: dict | None = None) -> None:
    """Evaluate `nodes` in order through the table, reading and writing tensors by name in `values`
    (and setting each result's static shape from `shapes`, ONNX's inferred shapes)."""
    from .ops import Attrs, Unsupported

    table = op_table()
    for node in nodes:
        args = [values[name] if name else None for name in node.input]
        try:
            result = table[node.op_type](args, Attrs(node))
        except Unsupported as e:
            raise LrpcError(
                f"{node_label(node)}: the TensorFlow export does not cover this {node.op_type}: {e}; "
                "use --format onnx for this model, or report the op"
            ) from None
        results = result if isinstance(result, tuple) else (result,)
        for name, value in zip(node.output, results):
            if name:
                if shapes and name in shapes:
                    value.set_shape(shapes[name])
                values[name] = value


def _signature_shape(value) -> list:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _tf_type(tf, value):
    from .ops import Unsupported, tf_dtype

    try:
        return tf_dtype(value.type.tensor_type.elem_type)
    except Unsupported as e:
        raise LrpcError(f"graph input '{value.name}': {e}") from None


def _save_atomically(tf, module, path: str, record: dict) -> None:
    """Save into a temporary folder beside `path`, then move it into place (replacing an older SavedModel)."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not _replaceable(path):
        raise LrpcError(f"{path} exists and is not a SavedModel folder; choose another output path")
    try:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    except OSError as e:
        raise LrpcError(
            f"cannot write {path}: {e.strerror} ({parent}); choose a folder that exists and is writable"
        ) from e
    old = None
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve.get_concrete_function()})
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, "assets.extra", "lrpc.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the SavedModel is an ordinary output
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old.", dir=parent)
            os.replace(path, os.path.join(old, "previous"))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(path):  # put the previous SavedModel back
            os.replace(os.path.join(old, "previous"), path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _replaceable(path: str) -> bool:
    """An existing output we may replace: an empty folder or a SavedModel folder."""
    return os.path.isdir(path) and (not os.listdir(path) or os.path.exists(os.path.join(path, "saved_model.pb")))
