"""What is explained: which tensor, which of its units, and the relevance it starts with.

The explained tensor is the first model output, with an output Softmax/LogSoftmax/Sigmoid stripped
(its input, the logits, is explained; `--keep-output-activation` takes the start relevance from the
activation's output instead, so probabilities are explained, each assigned to its own logit).
For scores y of shape [batch, classes] the start relevance is

    R₀ = onehot(t) ⊙ y     t = argmax(y)      (target "max", the default)
                           t = k              (target "fixed:k", chosen at compile time)
                           t = target[n]      (target "input": an int64 graph input [batch])

so R₀ holds the selected logit's value and relevance sums to the explained score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .builder import Builder
from .errors import LrpcError

OUTPUT_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
TARGET_INPUT_NAME = "target"


@dataclass(frozen=True)
class Target:
    mode: str  # "max" | "fixed" | "input"
    index: int = 0

    @property
    def spec(self) -> str:
        return f"fixed:{self.index}" if self.mode == "fixed" else self.mode


def parse_target(text) -> Target:
    """`None`/"max" → largest logit; an int or "3" → that class; "input" → chosen per call."""
    if text is None or text == "max":
        return Target("max")
    if text == "input":
        return Target("input")
    try:
        index = int(text)
    except (TypeError, ValueError):
        raise LrpcError(f"--target takes 'max', 'input' or a class index, not '{text}'") from None
    if index < 0:
        raise LrpcError(f"--target {index}: a class index is ≥ 0")
    return Target("fixed", index)


def explained_value(graph: ir.Graph, keep_activation: bool = False) -> tuple[ir.Value, ir.Value]:
    """(start, scores): relevance starts at `start`, with R₀ taken from the values of `scores`.

    The first output is explained. If an output Softmax/LogSoftmax/Sigmoid produces it, its input
    (the logits) is both; with `keep_activation` the activation's output gives the scores (the
    selected probability becomes the start relevance of its logit).
    """
    value = graph.outputs[0]
    node = value.producer()
    while node is not None and node.op_type in ("Identity", "Dropout"):
        value = node.inputs[0]
        node = value.producer()
    if node is None or node.op_type not in OUTPUT_ACTIVATIONS:
        return value, value
    logits = node.inputs[0]
    return logits, (value if keep_activation else logits)


def start_relevance(b: Builder, y: ir.Value, target: Target, graph: ir.Graph) -> ir.Value:
    """R₀ for the explained scores y [batch, classes]; adds the `target` graph input in "input" mode."""
    if y.shape is None or len(y.shape) != 2:
        raise LrpcError(f"the explained output '{y.name}' has shape {y.shape}; lrpc explains class scores "
                        "of shape [batch, classes]")
    classes = y.shape[1]
    if not isinstance(classes, int):
        raise LrpcError(f"the explained output '{y.name}' has a dynamic class dimension; export it static")
    if target.mode == "fixed":
        if target.index >= classes:
            raise LrpcError(f"--target {target.index}: the model has {classes} classes (0–{classes - 1})")
        onehot = np.zeros((1, classes), b.dtype.numpy())
        onehot[0, target.index] = 1
        return b.op("Mul", y, b.const(onehot))
    if target.mode == "max":
        index = b.op("ArgMax", y, axis=1, keepdims=0)
    else:
        index = ir.Value(name=TARGET_INPUT_NAME, shape=ir.Shape([y.shape[0]]), type=ir.TensorType(ir.DataType.INT64))
        graph.inputs.append(index)
    # Equal + Where rather than OneHot: onnxruntime's OneHot has no kernel for double/half values.
    classes_row = b.const(np.arange(classes, dtype=np.int64)[None, :], dtype=np.int64)
    column = b.op("Unsqueeze", index, b.const(np.array([1], np.int64), dtype=np.int64))
    selected = b.op("Equal", column, classes_row)
    return b.op("Where", selected, y, b.const(np.zeros((), b.dtype.numpy())))
