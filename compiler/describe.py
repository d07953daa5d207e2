"""`lrpc inspect`: what compile would do — layers, shapes, rules, canonizations, what is explained."""

from __future__ import annotations

import onnx

from lrpc_runtime.metadata import KEY_PREPROCESS, KEY_VERSION
from lrpc_runtime.preprocess import Preprocessing

from .api import lowering, starts_at_value
from .builder import Builder
from .errors import node_label
from .gradient_form import gradient_form
from .lower import propagate
from .methods import GRADIENTS
from .methods.backward import backward
from .passes.mark_static import is_static
from .passes.quantized import dequantized_constant
from .passes.recognize_products import ABSORB, KIND, NAME
from .rules.table import RULES
from .targets import upstream
from .walk import Unexplained


def _call_constant(node) -> bool:
    """A node of a shape chain, mask or position table (a quantized weight has a line of its own)."""
    return all(is_static(v) for v in node.outputs) and dequantized_constant(node.outputs[0]) is None


def _shape(value) -> str:
    if value is None or value.shape is None:
        return "?"
    return "[" + ",".join(str(d) for d in value.shape) + "]"


def explained_metadata(path) -> dict[str, str]:
    """The lrpc.* metadata of an ONNX file (empty for a model lrpc has not compiled)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not readable as ONNX here: let the compile path give its clear error
        return {}
    return {p.key: p.value for p in model.metadata_props if p.key.startswith("lrpc.")}


def _readable(key: str, value: str) -> str:
    """A metadata value for people: the preprocessing spec spelled out, JSON kept as stored."""
    if key == KEY_PREPROCESS:
        try:
            return f"{Preprocessing.from_json(value).describe()}  {value}"
        except ValueError:
            return value
    return value


def describe_metadata(path, meta: dict[str, str]) -> str:
    """What an explained file records (its lrpc.* metadata), one key per line."""
    lines = [f"{path}: an explained file (lrpc {meta.get(KEY_VERSION, '?')})"]
    width = max((len(key) - 5 for key in meta), default=0)
    lines += [
        f"  {key[5:]:<{width}}  {_readable(key, value)}" for key, value in sorted(meta.items()) if key != KEY_VERSION
    ]
    if KEY_PREPROCESS not in meta:
        lines.append(
            f"  {'preprocess':<{width}}  (none stored: `lrpc explain` resizes images to the input and "
            "scales pixels by 1/255)"
        )
    return "\n".join(lines)


def _layer_treatment(node, p, method) -> str:
    """The rule a node's relevance (or, under a method, its gradient) goes back through."""
    if method is not None:
        if node.op_type not in GRADIENTS:
            return "no gradient rule"
        return {"guided": "ReLU: g ⊙ [x > 0] ⊙ [g > 0]", "deconvnet": "ReLU: g ⊙ [g > 0]"}.get(
            method.relu if node.op_type == "Relu" else "", "gradient"
        )
    kind = node.meta.get(KIND)
    if kind is not None:
        treatment = {
            "activation": "identity",
            "normalizer": "denominator held fixed",
            "quotient": "denominator held fixed",
            "centering": "x ⊙ (s − mean s)",
        }.get(kind)
        return f"{node.meta.get(NAME)}: {treatment or p.assigned[node].spec}"
    if node.meta.get(ABSORB):
        return "norm bias: takes its share"
    if node.op_type in ("Mul", "Div") and sum(v is not None and v.const_value is None for v in node.inputs) == 1:
        return "scale: R stays with its unit"
    return p.assigned[node].spec if node in p.assigned else getattr(RULES.get(node.op_type), "__name__", "no rule")


def gradient_form_taken(p) -> bool:
    """Whether compile builds plan `p`'s LRP rules in gradient form (a dry run on the plan's graph)."""
    cfg, usable = lowering(p)
    if not usable:
        return False
    graph = p.model.graph
    try:
        gradient_form(graph, p.explained, p.explained, cfg, Builder(graph, p.explained.dtype), list(graph.inputs))
    except Unexplained:
        return False
    return True


def dry_run(p, method=None) -> tuple[set, dict]:
    """(the nodes relevance or the gradient passes through, the nodes a compile would refuse with why):
    a dry run of the reverse walk on the plan's graph, which it extends — call it after reading the graph."""
    graph, visited = p.model.graph, set()
    b = Builder(graph, p.explained.dtype)
    try:
        if method is None:
            propagate(graph, p.explained, p.explained, lowering(p)[0], b, visited)
        else:
            floats = [v for v in graph.inputs if v.dtype is not None and v.dtype.is_floating_point()]
            backward(list(graph), p.scores, p.scores, floats, b, method.relu, visited=visited)
    except Unexplained as e:
        return visited, e.refused
    return visited, {}


def describe_plan(path, p, method=None) -> tuple[str, int]:
    """What compile would do with plan `p` (and gradient `method`, None for LRP), as text, and how many
    nodes it would refuse."""
    graph = p.model.graph
    start = ("its value" if starts_at_value(p.convention, method) else "1") + " at the selected units"
    lines = [
        f"{path}: opset {p.opset}",
        "  inputs:  " + ", ".join(f"{v.name} {_shape(v)}" for v in graph.inputs),
        "  outputs: " + ", ".join(f"{v.name} {_shape(v)}" for v in graph.outputs),
        f"explains: '{p.scores.name}' {_shape(p.scores)}, target {p.target.spec}, start relevance = {start}"
        + (f" (at '{p.explained.name}')" if p.explained is not p.scores else ""),
        (f"method: {method.spec}" if method else f"rules: {p.rules.spec}") + f"; convention {p.convention}",
        *(
            ["lowering: gradient form, R = x ⊙ g (every rule here is LRP-0-like: lrpc/gradient_form.py)"]
            if method is None and gradient_form_taken(p)
            else []
        ),
        "canonization:" + ("" if p.changes else " nothing to change"),
    ]
    lines += [f"  {line}" for line in p.changes]
    lines.append("layers (graph order; relevance flows from the last to the first):")
    rows, needed, nodes = [], upstream(p.explained), list(graph)
    visited, refused = dry_run(p, method)
    for node in nodes:
        if node.op_type in ("Shape", "Constant") or _call_constant(node):
            continue  # shape chains, masks, position tables: constants of the call (counted below)
        x = next((v for v in node.inputs if v is not None and v.const_value is None), None)
        rule = _layer_treatment(node, p, method)
        if node not in needed:
            rule = "— (not on the way to the explained tensor)"
        elif dequantized_constant(node.outputs[0]) is not None:
            rule = "— (a quantized constant: its layer reads it dequantized, (q − zp)·scale)"
        elif node not in visited:
            rule = "— (no relevance reaches it: inside a gate or a norm's denominator)"
        if node in refused:
            rule = "REFUSED: " + refused[node]
        rows.append((node.name or "<unnamed>", node.op_type, f"{_shape(x)} → {_shape(node.outputs[0])}", rule))
    static = sum(_call_constant(n) and n.op_type not in ("Shape", "Constant") for n in nodes)
    if static:
        rows.append(
            (
                f"({static} nodes)",
                "",
                "",
                "— shape chains, masks and position tables: constants of the call, no input reaches them",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    lines += [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    if refused:
        lines.append(
            f"{len(refused)} node{'s' if len(refused) > 1 else ''} lrpc cannot explain: "
            + ", ".join(node_label(n) for n in nodes if n in refused)
            + "; compile would stop there"
        )
    return "\n".join(lines), len(refused)
