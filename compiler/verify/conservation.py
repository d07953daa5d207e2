"""The conservation check: how much of the start relevance S₀ reaches the inputs.

    S₀ = Σ_u w_u·y_u   (w: the target's selection, y: the explained tensor lrpc.explained; w alone under
                        Zennit's convention)        ratio = Σ relevance / S₀, per sample

The ratio must be 1 (within `conservation_tolerance`) where LRP conserves exactly: the `zero` or
`epsilon` (ε ≤ 1e-4) rule on every layer, and a forward graph of CONSERVING_OPS with no bias and no
other constant added. Elsewhere biases and ε absorb some relevance and the ratio is reported, not
judged; gradient methods have no ratio.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from lrpc_runtime.metadata import KEY_CONVENTION, KEY_EXPLAINED, KEY_METHOD, KEY_RULE, KEY_TARGET

from ..ops import BIAS_INPUT_OPS, LINEAR_OPS, VIEW_OPS
from .compare import per_sample
from .report import Check

CONSERVING_OPS = {
    *LINEAR_OPS,
    *VIEW_OPS,
    "Relu",
    "MaxPool",
    "GlobalMaxPool",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Add",
    "Sum",
    "Mul",
    "Div",
    "Shape",
    "Gather",
    "Constant",
    "Cast",
}
MAX_CONSERVING_EPS = 1e-4


def selection(scores: np.ndarray, mode: str, feeds: dict) -> np.ndarray:
    """The target's weights w over each sample's units, [batch, units] (targets.py's, in numpy)."""
    flat = scores.reshape(len(scores), -1)
    if mode == "all":
        return np.ones_like(flat)
    if mode == "mask":
        return feeds["mask"].reshape(len(scores), -1).astype(np.float64)
    if mode == "max":
        index = flat.argmax(1)
    elif mode == "input":
        index = feeds["target"]
    else:
        parts = tuple(int(k) for k in mode[6:].split(","))
        index = np.full(len(flat), parts[0] if len(parts) == 1 else np.ravel_multi_index(parts, scores.shape[1:]))
    return (np.arange(flat.shape[1])[None, :] == np.asarray(index)[:, None]).astype(np.float64)


def eps_of(rule: str) -> float | None:
    """ε of a single `zero`/`epsilon` rule spec (0 for zero), None for anything else."""
    if rule == "zero":
        return 0.0
    name, _, params = rule.partition(":")
    if name != "epsilon" or ";" in rule:
        return None
    values = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
    return float(values.get("eps", 1e-6))


def upstream(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    """Every node `name` depends on."""
    producer = {out: node for node in graph.node for out in node.output}
    seen, todo, found = set(), [name], []
    while todo:
        node = producer.get(todo.pop())
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            found.append(node)
            todo += [i for i in node.input if i]
    return found


def conserving(proto: onnx.ModelProto, meta: dict[str, str]) -> tuple[bool, str]:
    """Whether LRP conserves exactly on this file, and why (not)."""
    if KEY_METHOD in meta:
        return False, "a gradient method"
    eps = eps_of(meta.get(KEY_RULE, ""))
    if eps is None or eps > MAX_CONSERVING_EPS:
        return False, f"rule {meta.get(KEY_RULE)} (only zero and epsilon with ε ≤ 1e-4 conserve exactly)"
    constants = {t.name: t for t in proto.graph.initializer}
    for node in upstream(proto.graph, meta[KEY_EXPLAINED]):
        if node.op_type not in CONSERVING_OPS:
            return False, f"the forward graph has a {node.op_type}"
        biases = (
            node.input[2:3]
            if node.op_type in BIAS_INPUT_OPS
            else [i for i in node.input if i in constants]
            if node.op_type in ("Add", "Sum")
            else []
        )
        if any(b in constants and np.any(numpy_helper.to_array(constants[b])) for b in biases):
            return False, f"{node.op_type} '{node.name}' adds a bias"
    return True, "zero/epsilon rule on a bias-free network"


def check_conservation(
    proto, meta, feeds, scores, relevance, tolerance
) -> tuple[np.ndarray | None, np.ndarray | None, Check]:
    """(per-sample ratios, start relevances S₀, the conservation check)."""
    if KEY_METHOD in meta:
        return None, None, Check("conservation", "info", "not applicable: gradient methods do not conserve relevance")
    strict, why = conserving(proto, meta)
    weights = selection(scores.astype(np.float64), meta[KEY_TARGET], feeds)
    from_value = meta.get(KEY_CONVENTION, "lrpc") != "zennit"
    start = (weights * per_sample(scores)).sum(1) if from_value else weights.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = relevance.sum(1) / start
    finite = ratios[np.isfinite(ratios)]
    spread = (
        f"Σ relevance / S₀ = {finite.min():.4f} … {finite.max():.4f}"
        if finite.size
        else "Σ relevance / S₀ is not finite"
    )
    if not strict:
        return ratios, start, Check("conservation", "info", f"{spread}; not judged: {why}")
    bad = ~(np.abs(ratios - 1) <= tolerance)
    return (
        ratios,
        start,
        Check(
            "conservation",
            "fail" if bad.any() else "pass",
            f"{spread} ({why}: must be 1 ± {tolerance:.0e})"
            + (f"; off in sample(s) {np.flatnonzero(bad).tolist()}" if bad.any() else ""),
        ),
    )
