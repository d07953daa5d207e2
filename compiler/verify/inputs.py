"""The inputs verify runs the file on: the caller's arrays, else random ones drawn like real data.

Explained float inputs: uniform [0, 1) pixels, normalized by the file's preprocessing (x − mean)/std
when lrpc.preprocess records one. Token ids: uniform over the vocabulary (lrpc.relevance_outputs).
A `target` input: random classes below lrpc.classes. Other integer inputs: runtime/text.py's fill
(an attention mask all ones). A free axis besides the batch (a sequence) is FREE_AXIS long.

Random inputs are refused before they are drawn when they would not fit INPUT_BUDGET:

    samples × Σ_inputs (values per sample) × 8 bytes ≤ 1 GiB       (numpy draws them in float64)
"""

from __future__ import annotations

import json

import numpy as np
import onnx

from lrpc_runtime.metadata import KEY_CLASSES, KEY_PREPROCESS, KEY_RELEVANCE, KEY_RELEVANCE_OUTPUTS, KEY_TARGET
from lrpc_runtime.text import side_input_fill

from ..errors import LrpcError

FREE_AXIS = 8  # the length random inputs take along a free axis besides the batch (a sequence)
INPUT_BUDGET = 1 << 30  # bytes the random inputs may take


def input_shape(value: onnx.ValueInfoProto, batch: int) -> tuple[int, ...]:
    """The input's shape with the batch `batch` and any other free axis FREE_AXIS long."""
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if shape and shape[0] is None:
        shape[0] = batch
    return tuple(FREE_AXIS if d is None else d for d in shape)


def check_input_budget(proto: onnx.ModelProto, samples: int) -> None:
    """Refuse `samples` random samples whose inputs would take more than INPUT_BUDGET bytes."""
    per_sample = sum(int(np.prod(input_shape(v, 1), dtype=np.float64)) for v in proto.graph.input) * 8
    if samples * per_sample > INPUT_BUDGET:
        fit = INPUT_BUDGET // max(per_sample, 1)
        raise LrpcError(
            f"--samples {samples}: the random inputs would take {samples * per_sample / 2**30:.3g} GiB "
            f"({per_sample // 8} values a sample, drawn in float64), more than verify's "
            f"{INPUT_BUDGET // 2**30} GiB; at most {fit} samples of this model fit (or give --inputs)"
        )


def token_vocab(meta) -> dict[str, int]:
    """Token-id input → its vocabulary size (lrpc.relevance_outputs of a text model)."""
    entries = json.loads(meta.get(KEY_RELEVANCE_OUTPUTS, "{}")).values()
    return {e["input"]: int(e["vocab"]) for e in entries if e.get("kind") == "token"}


def pixel_like(shape: tuple[int, ...], preprocess: str | None, rng: np.random.Generator) -> np.ndarray:
    """Uniform [0, 1) pixels, normalized by the file's preprocessing spec when it has one."""
    u = rng.random(shape)
    if preprocess and len(shape) == 4:
        spec = json.loads(preprocess)
        axis = (
            3
            if spec.get("layout") == "NHWC"
            or (spec.get("layout") is None and shape[3] in (1, 3) and shape[1] not in (1, 3))
            else 1
        )
        view = [1, 1, 1, 1]
        view[axis] = -1
        mean = np.asarray(spec.get("mean", [0.0]), np.float64).reshape(view)
        std = np.asarray(spec.get("std", [1.0]), np.float64).reshape(view)
        u = (u * 255.0 * spec.get("scale", 1 / 255) - mean) / std
    return u.astype(np.float32)


def make_feeds(proto, meta, inputs, samples: int, rng) -> tuple[dict[str, np.ndarray], str]:
    """Every graph input: the given arrays, else random ones; random targets and masks. Also what they
    are, in words ("{seed}" left to fill)."""
    explained = list(json.loads(meta[KEY_RELEVANCE]))
    if inputs is not None and not isinstance(inputs, dict):
        inputs = {explained[0]: inputs} if len(explained) == 1 else None
        if inputs is None:
            raise LrpcError(f"the model has inputs {explained}: give a dict of arrays")
    given = {k: np.asarray(v) for k, v in (inputs or {}).items()}
    batch = next(iter(given.values())).shape[0] if given else samples
    feeds, vocab = {}, token_vocab(meta)
    for value in proto.graph.input:
        name = value.name
        if name in given:
            feeds[name] = given[name].astype(np.float32) if given[name].dtype.kind in "fiu" else given[name]
        elif name == "target" and meta[KEY_TARGET] == "input":  # the input lrpc added, not a model's own
            feeds[name] = rng.integers(0, int(meta.get(KEY_CLASSES, "1")), batch).astype(np.int64)
        elif value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            feeds[name] = (
                pixel_like(input_shape(value, batch), meta.get(KEY_PREPROCESS), rng)
                if name in explained
                else rng.random(input_shape(value, batch)).astype(np.float32)
            )
        elif name in vocab:  # token ids
            feeds[name] = rng.integers(0, vocab[name], input_shape(value, batch)).astype(_int_type(value))
        elif value.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            feeds[name] = np.full(input_shape(value, batch), side_input_fill(name), _int_type(value))
        else:
            raise LrpcError(f"input '{name}' is neither float nor integer: give it (--inputs)")
    free = any(not d.HasField("dim_value") for v in proto.graph.input for d in v.type.tensor_type.shape.dim[1:])
    what = (
        "the inputs given"
        if given
        else f"{batch} random sample{'s' * (batch != 1)}, "
        + ("random token ids" if vocab else "uniform [0, 1) pixels")
        + (f", free axes {FREE_AXIS} long" if free else "")
        + " (seed {seed})"
    )
    return feeds, what


def _int_type(value: onnx.ValueInfoProto):
    return np.int32 if value.type.tensor_type.elem_type == onnx.TensorProto.INT32 else np.int64
