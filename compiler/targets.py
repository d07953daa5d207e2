"""What is explained: which tensor, which of its units, and the relevance it starts with.

The explained tensor y [batch, d₁, …] is the first model output, another output (`--output NAME`)
or an inner tensor (`--explain NAME`: a value, a node, or a Keras layer's scope). At a graph output
a final Softmax/LogSoftmax/Sigmoid is stripped, so the logits are explained (`--keep-output-activation`
takes the start values from the activation's output instead: the selected probability starts at
its logit). With u the per-sample units of y (flattened), the start relevance is

    R₀ = onehot(t) ⊙ y     t = argmax(u)          target "max" (default)
                           t = k                  target "fixed:k" (k flat, or a multi-index k₁,k₂,…)
                           t = target[n]          target "input": an int64 graph input `target` [batch]
    R₀ = y                                        target "all" (e.g. a whole reconstruction)
    R₀ = mask ⊙ y                                 target "mask": a graph input `mask` of y's shape

so R₀ holds the selected units' values and relevance sums to the explained score.

A language-model head y [batch, seq, vocab] with a dynamic seq dim (or any [batch, seq, vocab] tensor
given `position`) is explained at one position p (default −1, the last; negative counts from the end),
its units being the vocab logits there, u = y[:, p, :]:

    R₀[n, s, v] = [s = p mod seq] · onehot(t)[v] · y[n, s, v]
                  t = argmax_v y[n, p, v]                 target "max": the most likely next token
                  t = k                                   target "fixed:k": token k
                  t = target[n]                           target "input": chosen per call

(p is fixed at compile time; "all" and "mask" weigh the whole tensor, as for any other shape). A
tensor with static shapes and no `position` keeps the rule above: its units are all of y[n].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .builder import Builder
from .errors import LrpcError

OUTPUT_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
TARGET_INPUT_NAME = "target"
MASK_INPUT_NAME = "mask"
MODES = ("max", "fixed", "input", "all", "mask")


@dataclass(frozen=True)
class Target:
    mode: str  # one of MODES
    index: tuple[int, ...] = ()

    @property
    def spec(self) -> str:
        return f"fixed:{','.join(map(str, self.index))}" if self.mode == "fixed" else self.mode


def parse_target(text) -> Target:
    """None/"max", "all", "mask", "input", or a unit index: 3, "3" or "0,4,4" (a multi-index)."""
    if text is None:
        return Target("max")
    if isinstance(text, (int, np.integer)):
        text = str(int(text))
    if text in ("max", "input", "all", "mask"):
        return Target(text)
    try:
        index = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise LrpcError(f"--target takes max, all, mask, input or a unit index (3, or 0,4,4), not '{text}'") from None
    if any(i < 0 for i in index):
        raise LrpcError(f"--target {text}: indices are ≥ 0")
    return Target("fixed", index)


def _strip_identity(value: ir.Value) -> ir.Value:
    node = value.producer()
    while node is not None and node.op_type in ("Identity", "Dropout"):
        value = node.inputs[0]
        node = value.producer()
    return value


def find_output(graph: ir.Graph, name: str | None) -> ir.Value:
    if not graph.outputs:
        raise LrpcError(
            "the model has no outputs, so there is nothing to explain; a graph lists the tensors it "
            "returns as its outputs"
        )
    if name is None:
        return graph.outputs[0]
    for value in graph.outputs:
        if value.name == name:
            return value
    raise LrpcError(
        f"--output {name}: the model has no output of that name; its outputs are "
        f"{', '.join(v.name for v in graph.outputs)}"
    )


def find_tensor(graph: ir.Graph, name: str) -> ir.Value:
    """A value by name, a node's first output by node name, or the last output of a layer scope
    (node names with a path component `name` or Keras' `name_1`, as tf2onnx writes them)."""
    nodes = list(graph)
    for node in nodes:
        for value in node.outputs:
            if value.name == name:
                return value
    for node in nodes:
        if node.name == name:
            return node.outputs[0]
    scoped = [n for n in nodes if n.name and ({name, f"{name}_1"} & set(n.name.split("/")[:-1]))]
    if scoped:
        return scoped[-1].outputs[0]
    raise LrpcError(
        f"--explain {name}: no tensor, node or layer of that name after canonization (tensors folded "
        "into a layer, e.g. a conv output before a BatchNorm, no longer exist: name the BN's output); "
        f"some tensors: {', '.join(n.outputs[0].name for n in nodes[-8:])}"
    )


def resolve_explain(graph: ir.Graph, text: str) -> tuple[ir.Value, Target | None]:
    """--explain NAME or NAME:INDEX (INDEX as for --target) → (tensor, fixed target or None).
    A name that itself ends in ':digits' (tf2onnx's 'dense/BiasAdd:0') is tried whole first."""
    try:
        return find_tensor(graph, text), None
    except LrpcError:
        name, sep, index = text.rpartition(":")
        if not sep or not index.replace(",", "").isdigit():
            raise
        return find_tensor(graph, name), parse_target(index)


def explained_value(
    graph: ir.Graph, output: str | None = None, keep_activation: bool = False
) -> tuple[ir.Value, ir.Value]:
    """(start, scores) at a graph output: relevance starts at `start`, R₀ from the values of `scores`."""
    value = _strip_identity(find_output(graph, output))
    node = value.producer()
    if node is None or node.op_type not in OUTPUT_ACTIVATIONS:
        return value, value
    logits = node.inputs[0]
    return logits, (value if keep_activation else logits)


def units(y: ir.Value, position: int | None = None) -> tuple[int, ...]:
    """The per-sample shape of y's units (static): y[n], or the vocab logits y[n, p] at a `position`."""
    if y.shape is None or len(y.shape) < 2:
        raise LrpcError(
            f"the explained tensor '{y.name}' has shape {y.shape}; lrpc explains tensors of shape [batch, ...]"
        )
    if position is not None:
        return (y.shape[2],)
    dims = tuple(y.shape[1:])
    if not all(isinstance(d, int) for d in dims):
        raise LrpcError(
            f"the explained tensor '{y.name}' has dynamic non-batch dims {y.shape}; export them static "
            "(a [batch, seq, vocab] language-model head with a dynamic seq is explained at one position: "
            "--position, default the last)"
        )
    return dims


def unit_count(y: ir.Value, target: Target, position: int | None = None) -> int | None:
    """Units per sample (checks y's shape); None where target all or mask weighs dynamic dims."""
    if (
        target.mode in ("all", "mask")
        and position is None
        and y.shape is not None
        and len(y.shape) >= 2
        and not all(isinstance(d, int) for d in y.shape[1:])
    ):
        return None
    return int(np.prod(units(y, position)))


def sequence_position(y: ir.Value, position: int | None, target: Target) -> int | None:
    """The position whose vocab logits are explained (module docstring): `position` when given, −1 for a
    [batch, seq, vocab] tensor with a dynamic seq dim under target max/fixed/input; None: y's units are
    explained whole."""
    shape = y.shape
    lm_head = shape is not None and len(shape) == 3 and isinstance(shape[2], int)
    if position is None:
        dynamic_seq = lm_head and not isinstance(shape[1], int)
        return -1 if dynamic_seq and target.mode in ("max", "fixed", "input") else None
    if not lm_head:
        raise LrpcError(
            f"--position {position}: the explained tensor '{y.name}' has shape {shape}; --position picks "
            "a position of a [batch, seq, vocab] tensor (a language-model head)"
        )
    if target.mode in ("all", "mask"):
        raise LrpcError(
            f"--position {position} selects one position for --target max, a token id or input; "
            f"--target {target.mode} weighs the whole tensor: drop one of them"
        )
    if isinstance(shape[1], int) and not -shape[1] <= position < shape[1]:
        raise LrpcError(f"--position {position}: '{y.name}' has {shape[1]} positions ({-shape[1]} … {shape[1] - 1})")
    if target.mode == "fixed" and (len(target.index) != 1 or target.index[0] >= shape[2]):
        raise LrpcError(
            f"--target {target.spec[6:]}: at a position, the target is one token id 0–{shape[2] - 1} "
            f"of '{y.name}' (vocab {shape[2]})"
        )
    return int(position)


def _flat_index(target: Target, dims: tuple[int, ...], name: str) -> int:
    index = target.index
    if len(index) == 1 and len(dims) > 1:
        flat = index[0]
        if flat >= int(np.prod(dims)):
            raise LrpcError(f"--target {flat}: '{name}' has {int(np.prod(dims))} units per sample (shape {list(dims)})")
        return flat
    if len(index) != len(dims) or any(i >= d for i, d in zip(index, dims)):
        has = f"{dims[0]} classes (0–{dims[0] - 1})" if len(dims) == 1 else f"per-sample shape {list(dims)}"
        raise LrpcError(f"--target {target.spec[6:]}: '{name}' has {has}")
    return int(np.ravel_multi_index(index, dims))


def selection(b: Builder, y: ir.Value, target: Target, graph: ir.Graph, position: int | None = None) -> ir.Value | None:
    """The weights w of y's units that `target` selects (one-hot, mask; None: all units equally),
    shaped like y (at a `position`: zero elsewhere); adds the `target` or `mask` graph input where the
    mode needs it."""
    if position is not None:
        return _at_position(b, y, target, graph, position)
    if target.mode == "all":
        return None
    if target.mode == "mask":
        mask = ir.Value(name=MASK_INPUT_NAME, shape=y.shape, type=y.type)
        graph.inputs.append(mask)
        return mask
    dims = units(y)
    if target.mode == "fixed":
        onehot = np.zeros(int(np.prod(dims)), b.dtype.numpy())
        onehot[_flat_index(target, dims, y.name)] = 1
        return b.const(onehot.reshape(1, *dims))
    flat = b.op("Reshape", y, _int64(b, [0, -1])) if len(dims) > 1 else y
    count = int(np.prod(dims))
    onehot = _onehot(b, _chosen(b, flat, target, graph, y, count), count)
    return onehot if len(dims) == 1 else b.op("Reshape", onehot, b.op("Shape", y))


def _int64(b: Builder, values) -> ir.Value:
    return b.const(np.asarray(values, np.int64), dtype=np.int64)


def _chosen(b: Builder, u: ir.Value, target: Target, graph: ir.Graph, y: ir.Value, count: int) -> ir.Value:
    """The unit index per sample [batch] of the units u [batch, `count`]: argmax, or the `target` input,
    checked in the graph itself (for onnxruntime, Triton, TF Serving alone): with a = [0, 1, …, count − 1],

        t = max(a[t], a[t − count])

    equals t for 0 ≤ t < count, and one of the two Gathers fails the run ("indices element out of data
    bounds") otherwise — a[t] for t ≥ count, a[t − count] for t < 0 — instead of an all-zero map."""
    if target.mode == "max":
        return b.op("ArgMax", u, axis=1, keepdims=0)
    index = ir.Value(name=TARGET_INPUT_NAME, shape=ir.Shape([y.shape[0]]), type=ir.TensorType(ir.DataType.INT64))
    graph.inputs.append(index)
    scope, b.scope = b.scope, "lrp/target_in_range"  # the name a failed run reports
    units = _int64(b, np.arange(count))
    below = b.op("Gather", units, b.op("Sub", index, _int64(b, count)), axis=0)
    checked = b.op("Max", b.op("Gather", units, index, axis=0), below)
    b.scope = scope
    return checked


def _onehot(b: Builder, index: ir.Value, count: int) -> ir.Value:
    """[batch, count] one-hot rows of `index` [batch]."""
    # Equal + Cast rather than OneHot: onnxruntime's OneHot has no kernel for double/half values.
    positions = _int64(b, np.arange(count)[None, :])
    column = b.op("Unsqueeze", index, _int64(b, [1]))
    return b.op("Cast", b.op("Equal", column, positions), to=b.dtype)


def _at_position(b: Builder, y: ir.Value, target: Target, graph: ir.Graph, position: int) -> ir.Value:
    """w [batch, seq, vocab] = [s = p mod seq] · onehot(t) (module docstring)."""
    vocab = y.shape[2]
    if target.mode == "fixed":
        tokens = _onehot(b, _int64(b, [target.index[0]]), vocab)  # [1, vocab]
    else:
        tokens = _onehot(b, _chosen(b, b.op("Gather", y, _int64(b, position), axis=1), target, graph, y, vocab), vocab)
    seq = b.op("Squeeze", b.op("Shape", y, start=1, end=2), _int64(b, [0]))
    steps = b.op("Range", _int64(b, 0), seq, _int64(b, 1))
    at = _int64(b, position) if position >= 0 else b.op("Add", seq, _int64(b, position))
    column = b.op("Reshape", b.op("Cast", b.op("Equal", steps, at), to=b.dtype), _int64(b, [1, -1, 1]))
    return b.op("Mul", column, b.op("Unsqueeze", tokens, _int64(b, [1])))


def start_signals(
    b: Builder, y: ir.Value, target: Target, graph: ir.Graph, scaled: bool = True, position: int | None = None
) -> tuple[ir.Value, ir.Value]:
    """(R₀, the gradient seed w shaped like y) for the selection w of `target` (at `position`, for a
    sequence): R₀ = w ⊙ y (lrpc's and iNNvestigate's convention), or w itself when not `scaled`
    (Zennit's). One selection, so a `target` or `mask` input is added once; the builder drops whichever
    of the two nothing reads."""
    w = selection(b, y, target, graph, position)
    if w is None:
        seed = b.op("ConstantOfShape", b.op("Shape", y), value=ir.tensor(np.ones(1, b.dtype.numpy())))
    else:
        seed = b.op("Expand", w, b.op("Shape", y))
    if not scaled:
        return seed, seed
    return (y if w is None else b.op("Mul", y, w)), seed


def upstream(value: ir.Value) -> set[ir.Node]:
    """The nodes `value` depends on (its producer included)."""
    seen, todo = set(), [value.producer()]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [v.producer() for v in node.inputs if v is not None]
    return seen
