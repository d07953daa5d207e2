"""Token-id inputs: a text model is explained at its embedding lookups.

An integer graph input `ids` [batch, seq] (int64/int32) is a *token input* when it is the indices of
embedding lookups E_k = Gather(T_k, ids) along axis 0 with a constant table T_k [vocab, hidden]. The
walk's sources are then the lookups' outputs E_k [batch, seq, hidden], and

    R_E[n, s, h] = Σ_k R_{E_k}[n, s, h]           per feature (with per_feature: a second output)
    R_ids[n, s]  = Σ_h R_E[n, s, h]               per token: the output relevance[_ids] [batch, seq]

(a word embedding reused by a tied head, or any second lookup of the same ids, adds its share; a lookup
of a view of the ids — Reshape, Squeeze, Unsqueeze, Flatten: GPT-2's ids.view(-1, seq) — has its R_E
reshaped back to [*ids.shape, hidden] first). A
position embedding looked up from a Range / shape chain has no input as its indices: it is no source
and gets none. Integer inputs that no lookup reads (attention_mask, token_type_ids without a table)
pass through: inputs of the explained file, unchanged, with no relevance output. Beside its lookups a
token input may feed shape chains (Shape, Size) and comparisons (a padding mask built from the ids);
any other use — a OneHot, a Cast to float, a Reshape before the lookup — is refused, naming the node.

The reverse walk (walk.py) stops at graph inputs; a lookup's output has a producer, so during the walk
each E_k is stood in for by a fresh graph input E_k' (its uses moved onto E_k'), and the integer inputs
leave the input list (`detached`); afterwards every use of E_k' — the forward nodes and the rule nodes
that read E_k as an activation — is moved back onto E_k, and the inputs are restored in their order.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .errors import LrpcError, node_label
from .ops import VIEW_OPS

INT_TYPES = (ir.DataType.INT64, ir.DataType.INT32)
ALLOWED_USES = ("Shape", "Size", "Equal", "Not", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")
PER_FEATURE_SUFFIX = "_per_feature"


@dataclass(frozen=True)
class TokenInput:
    """An integer input of token ids and the embedding lookups that read it."""

    ids: ir.Value
    lookups: tuple[ir.Node, ...]

    @property
    def vocab(self) -> int:
        """Valid ids are 0 … vocab − 1: the rows of the smallest table."""
        return min(int(n.inputs[0].const_value.shape[0]) for n in self.lookups)

    @property
    def hidden(self) -> int | None:
        dims = {int(np.prod(n.inputs[0].const_value.shape[1:])) for n in self.lookups}
        return dims.pop() if len(dims) == 1 else None


def is_int(value: ir.Value) -> bool:
    return value.dtype in INT_TYPES


def id_views(ids: ir.Value) -> list[ir.Value]:
    """`ids` and its views: Reshape/Squeeze/Unsqueeze/Flatten of it (GPT-2's ids.view(-1, seq))."""
    views = [ids]
    for v in views:
        views += [u.node.outputs[0] for u in v.uses() if u.node.op_type in VIEW_OPS and u.idx == 0]
    return views


def embedding_lookups(ids: ir.Value) -> list[ir.Node]:
    """The Gathers that look `ids` (or a view of it) up in a constant float table: Gather(table, ids), axis 0."""
    return [
        u.node
        for v in id_views(ids)
        for u in v.uses()
        if u.node.op_type == "Gather"
        and u.idx == 1
        and u.node.inputs[0] is not None
        and u.node.inputs[0].const_value is not None
        and u.node.inputs[0].dtype.is_floating_point()
        and u.node.attributes.get_int("axis", 0) == 0
    ]


def _other_uses(ids: ir.Value, lookups: list[ir.Node]) -> list[ir.Node]:
    return [
        u.node
        for v in id_views(ids)
        for u in v.uses()
        if u.node not in lookups
        and u.node.op_type not in ALLOWED_USES
        and not (u.node.op_type in VIEW_OPS and u.idx == 0)
    ]


def _refuse(ids: ir.Value, node: ir.Node, looked_up: bool) -> LrpcError:
    why = "is also used by" if looked_up else "reaches the model through"
    return LrpcError(
        f"the integer input '{ids.name}' {why} node {node_label(node)}, not as the indices of an "
        "embedding lookup: lrpc explains token ids only at their lookups Gather(table, ids) (axis 0, "
        "a constant table); export the model with the ids fed straight to the embedding Gather "
        "(an nn.Embedding), or give it the one-hot/embedded input as a float input to explain"
    )


def token_inputs(graph: ir.Graph, skip: tuple[str, ...] = ()) -> tuple[list[TokenInput], list[ir.Value]]:
    """(token inputs, pass-through integer inputs) of `graph`; raises for a token input used otherwise than
    as lookup indices, and for an integer input one-hot encoded in the graph."""
    tokens, passing = [], []
    for v in graph.inputs:
        if v.name in skip or not is_int(v):
            continue
        lookups = embedding_lookups(v)
        one_hot = next((n for n in _other_uses(v, lookups) if n.op_type == "OneHot"), None)
        if one_hot is not None:
            raise _refuse(v, one_hot, bool(lookups))
        if lookups:
            others = _other_uses(v, lookups)
            if others:
                raise _refuse(v, others[0], True)
            tokens.append(TokenInput(v, tuple(lookups)))
        else:
            passing.append(v)
    return tokens, passing


def no_source_error(passing: list[ir.Value]) -> LrpcError:
    """The error for a model with no float input and no embedding lookup."""
    for v in passing:
        content = [u.node for u in v.uses() if u.node.op_type not in ALLOWED_USES]
        if content:
            return _refuse(v, content[0], False)
    kinds = ", ".join(f"'{v.name}' ({v.dtype})" for v in passing) or "none"
    return LrpcError(
        f"the model has no float input to explain and no embedding lookup Gather(table, ids) of an "
        f"integer input (its integer inputs: {kinds}); lrpc explains float inputs, or token ids at "
        "their embedding lookup"
    )


@contextmanager
def detached(graph: ir.Graph, tokens: list[TokenInput], passing: list[ir.Value]):
    """During the block each lookup output E is stood in for by a graph input E' and the integer inputs are
    off the input list (module docstring); yields {E: E'}. Everything is put back on exit."""
    saved = list(graph.inputs)
    stand_ins = {}
    for token in tokens:
        for node in token.lookups:
            e = node.outputs[0]
            stand_ins[e] = ir.Value(name=f"{e.name}/lrpc_source", shape=e.shape, type=e.type)
            ir.convenience.replace_all_uses_with(e, stand_ins[e])
    dropped = {t.ids for t in tokens} | set(passing)
    graph.inputs.clear()
    graph.inputs.extend([v for v in saved if v not in dropped] + list(stand_ins.values()))
    try:
        yield stand_ins
    finally:
        for e, s in stand_ins.items():
            ir.convenience.replace_all_uses_with(s, e)
        added = [v for v in graph.inputs if v not in saved and v not in stand_ins.values()]
        graph.inputs.clear()
        graph.inputs.extend(saved + added)


def token_relevance(b, token: TokenInput, reached: dict, stand_ins: dict) -> tuple[ir.Value, ir.Value]:
    """(R_ids [batch, seq], R_E [batch, seq, hidden]) from the relevance the walk left at the stand-ins
    (zeros where none arrived)."""
    as_ids = b.op("Concat", b.op("Shape", token.ids), b.const(np.array([-1], np.int64), dtype=np.int64), axis=0)
    zeros = lambda e: b.op("ConstantOfShape", b.op("Shape", e), value=ir.tensor(np.zeros(1, b.dtype.numpy())))
    parts = [
        (r if n.inputs[1] is token.ids else b.op("Reshape", r, as_ids))  # a view's layout back to the ids'
        for n in token.lookups
        if (r := reached.get(stand_ins[n.outputs[0]])) is not None
    ]
    if not parts:  # no relevance reached a lookup
        first = token.lookups[0]
        e = zeros(first.outputs[0])
        parts = [e if first.inputs[1] is token.ids else b.op("Reshape", e, as_ids)]
    per_feature = b.add_all(parts)
    last = b.const(np.array([-1], np.int64), dtype=np.int64)
    return b.op("ReduceSum", per_feature, last, keepdims=0), per_feature


def describe(token: TokenInput, output: str, per_feature: str | None) -> dict:
    """What the relevance outputs of a token input are (the lrpc.relevance_outputs entries)."""
    lookups = [n.name or n.outputs[0].name for n in token.lookups]
    shape = [d if isinstance(d, int) else str(d) for d in (token.ids.shape or [])]
    entries = {
        output: {
            "input": token.ids.name,
            "kind": "token",
            "shape": shape,
            "vocab": token.vocab,
            "at": lookups,
            "sum": "over the embedding's hidden axis",
        }
    }
    if per_feature is not None:
        entries[per_feature] = {
            "input": token.ids.name,
            "kind": "token_feature",
            "shape": [*shape, token.hidden],
            "vocab": token.vocab,
            "at": lookups,
        }
    return entries
