"""Attention: the softmax, and matrix products of two activations (q·kᵀ, A·v), as AttnLRP and CP-LRP.

For O = A·B (a MatMul of two activations, batched over leading axes), R the relevance at O and
s = R / stab(O) (ε of the layer's rule, as for a join):

    rule "half"           R_A = ½ A ⊙ (s·Bᵀ),   R_B = ½ B ⊙ (Aᵀ·s)         AttnLRP's uniform rule
    rule "gate-constant"  R_B = B ⊙ (Aᵀ·s), A none                         CP-LRP (A: attention weights)

(with the roles swapped when the held factor is B). Each term is the LRP-0 rule of the product as a linear
map of one factor with the other held fixed; each sums to Σ R (ε → 0), so "half" conserves with ½ + ½.
"gate-constant" holds fixed the factor that is a softmax's output: CP-LRP's attention weights, through
which no relevance reaches q and k.

For the softmax y = softmax(x) along an axis (Achtibat et al. 2024, the gradient × input of the softmax):

    R_x = x ⊙ (R − y ⊙ Σ_axis R)

It sums to Σ x R − (Σ x y)·Σ R per row: it does not conserve (the softmax is not homogeneous); a
constant shift of x (a mask constant, a bias) changes the split, as it does in AttnLRP. Where a mask
made x = −inf, y = 0 and R = 0: x is read as the lowest finite float there, so R_x = 0, not −inf·0 (a
Max, left out where x is a matrix product scaled by finite constants, which no mask reached).
"""

from __future__ import annotations

import numpy as np

from ..errors import LrpcError, node_label
from ..passes.recognize_products import GATE, NAME
from .table import relevance_rule


def _swap_last(b, v):
    rank = len(v.shape) if v.shape is not None else None
    if rank is None or rank < 2:
        raise LrpcError(
            f"the MatMul operand '{v.name}' has {'an unknown rank' if rank is None else f'rank {rank}'}; "
            "lrpc explains products of two activations of rank ≥ 2 with known rank"
        )
    return b.op("Transpose", v, perm=[*range(rank - 2), rank - 1, rank - 2])


def _batch_unbroadcast(b, r, v, out):
    """r (v's last two dims, out's batch dims) summed over the batch axes along which v was broadcast."""
    vs, os_ = v.shape, out.shape
    lead = len(os_) - len(vs)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(vs[:-2]) if d == 1 and os_[lead + i] != 1]
    if not axes:
        return r
    summed = b.op("ReduceSum", r, b.const(np.array(axes, np.int64), dtype=np.int64), keepdims=1)
    return summed if lead == 0 else b.op("Reshape", summed, b.op("Shape", v))


def receiving_factors(node, cfg) -> list[int]:
    """The factors of O = A·B that receive relevance: both under "half", under "gate-constant" the one
    that is not a softmax output (the attention weights, held fixed)."""
    rule, held = cfg.product_rule_for(node), node.meta.get(GATE)
    if rule == "gate-constant" and held is None:
        raise LrpcError(
            f"{node_label(node)}: rule gate-constant, but neither factor of this "
            f"{node.meta.get(NAME, 'product')} is a softmax output (attention weights) to hold "
            "fixed; give it the rule half, e.g. --rule-map 'product=half'"
        )
    return [i for i in (0, 1) if rule == "half" or held == 1 - i]


def halve_quotient(out, a, bb) -> bool:
    """Whether ½ is cheaper applied once at O's side than on each factor's term (exact either way)."""
    return _matrix_size(out) <= _matrix_size(a) + _matrix_size(bb)


def bilinear(node, rel_out, b, cfg):
    """The relevance of O = A·B to both factors (module docstring)."""
    a, bb = node.inputs
    out = node.outputs[0]
    s = b.divide(rel_out[0], out, cfg.rule_for(node).eps)
    rule, terms = cfg.product_rule_for(node), receiving_factors(node, cfg)
    # ½ is exact in floating point: once on s, or on each term, whichever touches fewer elements
    halve_s = rule == "half" and halve_quotient(out, a, bb)
    if halve_s:
        s = b.op("Mul", s, b.const(0.5))
    back = {
        0: lambda: b.op("MatMul", s, _swap_last(b, bb)),  # R_A = A ⊙ (s·Bᵀ)
        1: lambda: b.op("MatMul", _swap_last(b, a), s),
    }  # R_B = B ⊙ (Aᵀ·s)
    rel = [None, None]
    for i in terms:
        factor = (a, bb)[i]
        r = b.op("Mul", factor, back[i]())
        if rule == "half" and not halve_s:
            r = b.op("Mul", r, b.const(0.5))
        rel[i] = _batch_unbroadcast(b, r, factor, out)
    return rel


def _matrix_size(v, symbolic: int = 512) -> int:
    """Elements of v's last two dims, a symbolic dim (sequence length) counted as `symbolic`: a cost estimate."""
    dims = list(v.shape)[-2:] if v.shape is not None else [None, None]
    return int(np.prod([d if isinstance(d, int) else symbolic for d in dims]))


@relevance_rule("Softmax")
def softmax(node, rel_out, b, cfg):
    x, y, r = node.inputs[0], node.outputs[0], rel_out[0]
    axis = node.attributes.get_int("axis", -1)
    total = b.op("ReduceSum", r, b.const(np.array([axis], np.int64), dtype=np.int64), keepdims=1)
    if not _unmasked_scores(x):  # a −inf mask: y = 0 and R = 0 there
        x = b.op("Max", x, b.const(np.finfo(b.dtype.numpy()).min))
    return [b.op("Mul", x, b.op("Sub", r, b.op("Mul", y, total)))]


def _unmasked_scores(x) -> bool:
    """Whether x is a matrix product, possibly scaled by finite constants: no mask can have set it to −inf."""
    node = x.producer()
    if node is None:
        return False
    if node.op_type in ("MatMul", "Gemm"):
        return True
    if node.op_type not in ("Mul", "Div") or len(node.inputs) != 2:
        return False
    variable, constant = node.inputs
    if node.op_type == "Mul" and variable.const_value is not None:
        variable, constant = constant, variable  # x·c or c·x; only x / c for a Div
    if constant.const_value is None or variable.const_value is not None:
        return False
    c = constant.const_value.numpy()
    finite = bool(np.isfinite(c).all()) and (node.op_type == "Mul" or bool((c != 0).all()))
    return finite and _unmasked_scores(variable)
