"""Products and quotients of two activations are recognised by what their factors compute.

A Mul or Div whose two operands both depend on the model input is one of four things, told apart by
the cone of the second factor g (the nodes between g and the first factor's source x):

    self-gated activation   y = a·f(x), a = c·x, f element-wise      SiLU x·σ(x), GELU x·½(1+erf(x/√2)),
                                                                     tanh-GELU, QuickGELU x·σ(1.702x),
                                                                     Mish x·tanh(softplus x), HardSwish
    normalizer              y = a·g(x) or a/g(x), g reduces x        RMSNorm x·rsqrt(mean x²+ε),
                            (element-wise ops and reductions only)   LayerNorm's (x−μ)/σ
    quotient                y = a/b, b anything else                 the denominator is held fixed
    product                 y = a·b, b not a function of a alone     squeeze-excitation x·σ(W·pool x),
                            through element-wise ops and reductions  GLU a·σ(b), gated MLPs

Self-gated activations take the identity rule (R_x = R_y: the gate f(x) is part of the activation,
as Zennit and AttnLRP treat GELU and SiLU); normalizers and quotients hold the denominator fixed
(R_a = R_y); a product takes the rule its composite or rule map assigns (rules/gates.py).

Also recognised, for LayerNorm written out of primitive ops:
- centering  d = x − mean_axes(x): one linear map (I − 𝟙𝟙ᵀ/n) of x (rules/norms.py);
- the affine β of a normalized tensor  y = n·γ + β: β absorbs its share, as a bias does.
Means that belong to a norm are marked, so the pooling canonization leaves them alone: a mean over
channels or tokens is not an average pool. Nothing in the graph changes; the marks live in node.meta.
"""

from __future__ import annotations

import onnx_ir as ir

from ..errors import node_label
from ..ops import VIEW_OPS
from .base import const_array
from .mark_static import is_static

KIND = "lrpc.product"  # "activation" | "normalizer" | "quotient" | "product" | "centering"
NAME = "lrpc.product_name"  # what was recognised, for `lrpc inspect` ("SiLU", "RMSNorm", ...)
SIGNAL = "lrpc.signal"  # index of the operand that carries the signal (activation, normalizer, quotient)
GATE = "lrpc.gate"  # index of the operand that is a gate (a product with a sigmoid-like factor), if any
ACTIVATED = "lrpc.activated"  # else the one operand computed by a nonlinearity (SwiGLU's SiLU(x·W_g)), if any
ABSORB = "lrpc.absorb"  # an Add of a constant whose constant takes its share of the relevance
ORIGIN = "lrpc.origin"  # "norm" on the means inside a norm (passes/avgpool_to_conv.py skips them)

UNARY = {
    "Sigmoid",
    "HardSigmoid",
    "Tanh",
    "Erf",
    "Softplus",
    "Relu",
    "Clip",
    "Exp",
    "Log",
    "Abs",
    "Neg",
    "Sqrt",
    "Reciprocal",
    "Softsign",
    "Elu",
    "Selu",
    "Celu",
    "LeakyRelu",
    "HardSwish",
    "Gelu",
    "Mish",
    "Swish",
    "Identity",
}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Min", "Max"}
REDUCTIONS = {"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2"}
ROUTING = {*VIEW_OPS, "Expand", "Transpose", "Cast"}
GATES = {"Sigmoid", "HardSigmoid", "Tanh", "Softmax", "Clip"}  # bounded outputs: a factor in (0, 1) or so
ACTIVATION_NAMES = [  # (ops in the gate's cone, name): the first whose ops are all present
    ({"Tanh", "Softplus"}, "Mish"),
    ({"Tanh", "Pow"}, "GELU (tanh)"),
    ({"Tanh", "Mul"}, "GELU (tanh)"),
    ({"Erf"}, "GELU"),
    ({"Sigmoid", "Mul"}, "QuickGELU"),
    ({"Sigmoid"}, "SiLU"),
    ({"HardSigmoid"}, "HardSwish"),
    ({"Clip"}, "HardSwish"),
    ({"Relu"}, "HardSwish"),
    ({"Tanh"}, "x·tanh(x)"),
]


def live(value: ir.Value | None) -> bool:
    return value is not None and const_array(value) is None and not is_static(value)


def _is_scalar_const(value: ir.Value | None) -> bool:
    array = const_array(value)
    return array is not None and array.size == 1


def scaled_source(value: ir.Value) -> list[ir.Value]:
    """`value` and the values it is a constant multiple of (c·x, x·c, x/c), back to x: the chain, x last."""
    chain = [value]
    while (p := chain[-1].producer()) is not None and p.op_type in ("Mul", "Div") and len(p.inputs) == 2:
        a, c = p.inputs
        if p.op_type == "Mul" and _is_scalar_const(a) and live(c):
            a, c = c, a
        if not (live(a) and _is_scalar_const(c)):
            break
        chain.append(a)
    return chain


def cone(value: ir.Value, stops: set) -> tuple[set, set, list]:
    """(sources, op types, reductions) of the element-wise/reduction cone above `value`, which ends at the
    values in `stops` and at anything computed otherwise (those are sources too)."""
    sources, ops, reductions, seen = set(), set(), [], set()
    todo = [value]
    while todo:
        v = todo.pop()
        if v in seen or not live(v):
            continue
        seen.add(v)
        p = v.producer()
        if (
            v in stops
            or p is None
            or p.op_type not in UNARY | BINARY | REDUCTIONS
            or (p.op_type == "Pow" and not _is_scalar_const(p.inputs[1]))
        ):
            sources.add(v)
            continue
        ops.add(p.op_type)
        if p.op_type in REDUCTIONS:
            reductions.append(p)
        todo.extend(p.inputs[:1] if p.op_type in REDUCTIONS | {"Pow"} else p.inputs)
    return sources, ops, reductions


def _self_function(node: ir.Node, signal: int):
    """(kind, name, reductions) if operand 1 − signal is a function of the signal's source alone."""
    chain = scaled_source(node.inputs[signal])
    other = node.inputs[1 - signal]
    sources, ops, reductions = cone(other, set(chain))
    if not sources or not sources <= set(chain):
        return None
    if reductions:
        source = chain[-1].producer()
        centered = source is not None and source.meta.get(KIND) == "centering"
        if centered:
            source.meta[NAME] = "LayerNorm centering"
        return "normalizer", "LayerNorm" if centered else "RMSNorm" if ops & {"Pow", "Mul"} else "norm", reductions
    if node.op_type == "Div":
        return "activation", "x/f(x)", []
    name = next((n for need, n in ACTIVATION_NAMES if need <= ops), "x·f(x)")
    return "activation", name, []


def _origin(v: ir.Value) -> ir.Node | None:
    """The node that computed v, through routing, a Resize (a gate upsampled to the signal's size stays
    a gate: ghostnetv2's attention), constant scaling and a Where that keeps v or puts a constant in its
    place (sdpa's Where(IsNaN(A), 0, A) after the softmax)."""
    while (p := v.producer()) is not None:
        if p.op_type in ROUTING or p.op_type == "Resize" or p.op_type in BINARY and sum(live(u) for u in p.inputs) == 1:
            v = next(u for u in p.inputs if live(u))
        elif p.op_type == "Where" and sum(live(u) for u in p.inputs[1:]) == 1:
            v = next(u for u in p.inputs[1:] if live(u))
        else:
            break
    return p


def _only(found: list[int]) -> int | None:
    return found[0] if len(found) == 1 else None


def gate_index(node: ir.Node) -> int | None:
    """The operand that is a gate: produced by a sigmoid-like op (through routing and constant scaling)."""
    return _only([i for i, v in enumerate(node.inputs) if (p := _origin(v)) is not None and p.op_type in GATES])


def activated_index(node: ir.Node) -> int | None:
    """The one operand computed by a nonlinearity (a gated MLP's act(x·W_g) beside x·W_u), if one is."""
    return _only(
        [
            i
            for i, v in enumerate(node.inputs)
            if (p := _origin(v)) is not None
            and (p.op_type in UNARY - {"Identity", "Neg"} or p.meta.get(KIND) == "activation")
        ]
    )


def _centering(node: ir.Node):
    """Sub(x, ReduceMean(x)) with keepdims: the mean's node, else None."""
    mean = node.inputs[1].producer()
    if mean is None or mean.op_type != "ReduceMean" or mean.inputs[0] is not node.inputs[0]:
        return None
    return mean if mean.attributes.get_int("keepdims", 1) else None


def _normalized(value: ir.Value) -> bool:
    """`value` is a normalizer's output, possibly scaled by constants (γ)."""
    while (p := value.producer()) is not None:
        if p.meta.get(KIND) == "normalizer":
            return True
        if p.op_type != "Mul" or sum(live(u) for u in p.inputs) != 1:
            return False
        value = next(u for u in p.inputs if live(u))
    return False


def recognise(node: ir.Node) -> str | None:
    """Mark `node` (see the module docstring); a line saying what it is, or None."""
    operands = [i for i, v in enumerate(node.inputs) if live(v)]
    if node.op_type == "Add" and len(operands) == 1 and len(node.inputs) == 2 and _normalized(node.inputs[operands[0]]):
        node.meta[ABSORB] = True
        return f"{node_label(node)}: the bias of a norm, takes its share"
    if node.op_type == "Sub" and len(operands) == 2 and (mean := _centering(node)) is not None:
        node.meta[KIND], node.meta[NAME] = "centering", "x − mean(x)"
        mean.meta[ORIGIN] = "norm"
        return f"{node_label(node)}: centering x − mean(x)"
    if node.op_type == "MatMul" and len(operands) == 2:
        return _matrix_product(node)
    if node.op_type not in ("Mul", "Div") or len(operands) != 2:
        return None
    for signal in (0, 1) if node.op_type == "Mul" else (0,):
        found = _self_function(node, signal)
        if found is not None:
            kind, name, reductions = found
            node.meta[KIND], node.meta[NAME], node.meta[SIGNAL] = kind, name, signal
            for r in reductions:
                r.meta[ORIGIN] = "norm"
            return f"{node_label(node)}: {name} ({kind})"
    if node.op_type == "Div":
        node.meta[KIND], node.meta[NAME], node.meta[SIGNAL] = "quotient", "a / b", 0
        return f"{node_label(node)}: a quotient of two activations, the denominator held fixed"
    node.meta[KIND], node.meta[NAME] = "product", "a·b"
    gate = gate_index(node)
    if gate is not None:
        node.meta[GATE], node.meta[NAME] = gate, "gate"
    elif (activated := activated_index(node)) is not None:
        node.meta[ACTIVATED], node.meta[NAME] = activated, "gated unit"
    return f"{node_label(node)}: a product of two activations" + (
        f", operand {gate} a gate" if gate is not None else ""
    )


def _weights_of_softmaxes(value: ir.Value, limit: int = 256) -> bool:
    """Every path from an input to `value` passes a Softmax: attention weights, perhaps mixed across heads
    (CaiT's talking heads), gated and renormalised (ConViT) after the softmax."""
    todo, seen, found = [value], set(), False
    while todo:
        v = todo.pop()
        if v in seen or not live(v):
            continue
        seen.add(v)
        p = v.producer()
        if p is None or not any(live(u) for u in p.inputs) or len(seen) > limit:
            return False  # an input or an embedding lookup reached around the softmaxes (or too far to tell)
        if p.op_type == "Softmax":
            found = True
            continue
        todo.extend(p.inputs)
    return found


def _matrix_product(node: ir.Node) -> str:
    """q·kᵀ or A·v: a product; a factor computed from softmax outputs alone is the attention weights (its
    GATE)."""
    node.meta[KIND], node.meta[NAME] = "product", "q·kᵀ"
    weights = [i for i, v in enumerate(node.inputs) if _weights_of_softmaxes(v)]
    gate = weights[0] if len(weights) == 1 else None
    if gate is not None:
        node.meta[GATE], node.meta[NAME] = gate, "attention A·v"
    return f"{node_label(node)}: {node.meta[NAME]}, a product of two activations"


class RecognizeProductsPass(ir.passes.InPlacePass):
    """Marks products, quotients, centerings and norm biases (module docstring); changes no node."""

    def __init__(self):
        super().__init__()
        self.changes: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.changes = [line for node in model.graph if (line := recognise(node))]
        return ir.passes.PassResult(model, False)
