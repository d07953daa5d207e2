"""A float64 oracle of one attention block, its ONNX graph, and the relevance of AttnLRP and CP-LRP.

The block (per sample; H heads of width e = d/H, KV heads 1 or H — multi-query attention broadcasts
k and v over the heads):

    q = x W_q,  k = x W_k,  v = x W_v               [s, d] → per head [s, e]
    P = q kᵀ,   S = c·P,   S' = S, or −inf where j > i (causal)
    A = softmax(S'),  O = A v,  h = O W_o + b_o,  u = x + h,  logits = u[0] W_c + b_c

The ONNX graph computes the causal mask and the head split from the input's shape (Shape, Range,
Concat: values no input reaches), so the sequence length stays dynamic.

The relevance is written out by contributions, each rule as a sum over explicit terms (no rule of lrpc
is reused): a linear map z_j = Σ_i x_i W_ij + b_j gives R_i = Σ_j x_i W_ij R_j / stab(z_j); the join
u = x + h gives x ⊙ R/stab(u) and h ⊙ R/stab(u); a product O_ij = Σ_k A_ik v_kj (and P = q kᵀ) gives
each factor ½ Σ A_ik v_kj R_ij / stab(O_ij) under AttnLRP, v the whole of it under CP-LRP; the softmax
R_x = x ⊙ (Jᵀ (R ⊘ y)) with its Jacobian J_ij = ∂y_j/∂x_i as a matrix and 0 where y = 0 or x = −inf.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .rules import stab


def linear_rel(x, w, z, r, eps):
    """R_i = Σ_j x_i W_ij R_j / stab(z_j), x [n, a], w [a, b], z, r [n, b]."""
    return np.einsum("ni,ij,nj->ni", x, w, r / stab(z, eps))


def product_rel(a, b, r, eps):
    """The terms a_ik b_kj R_ij / stab(O_ij) summed to a's and to b's shape (a [m, k], b [k, n])."""
    terms = np.einsum("ik,kj,ij->ikj", a, b, r / stab(a @ b, eps))
    return terms.sum(2), terms.sum(0)


def softmax_rel(x, y, r):
    """x ⊙ Jᵀ(R ⊘ y) per row, J_ij = y_j (δ_ij − y_i); 0 where x = −inf (y = 0, R = 0 there)."""
    out = np.zeros_like(x)
    for row in np.ndindex(x.shape[:-1]):
        yr = y[row]
        jac = np.diag(yr) - np.outer(yr, yr)  # symmetric
        ratio = np.divide(r[row], yr, out=np.zeros_like(yr), where=yr > 0)
        finite = np.isfinite(x[row])
        out[row][finite] = x[row][finite] * (jac @ ratio)[finite]
    return out


class Block:
    def __init__(self, d=8, heads=2, kv_heads=2, classes=3, seed=0, causal=True):
        rng = np.random.default_rng(seed)
        self.d, self.h, self.kv, self.causal = d, heads, kv_heads, causal
        self.e = d // heads
        self.wq = rng.standard_normal((d, d)) / np.sqrt(d)
        self.wk = rng.standard_normal((d, self.e * kv_heads)) / np.sqrt(d)
        self.wv = rng.standard_normal((d, self.e * kv_heads)) / np.sqrt(d)
        self.wo, self.bo = rng.standard_normal((d, d)) / np.sqrt(d), 0.1 * rng.standard_normal(d)
        self.wc, self.bc = rng.standard_normal((d, classes)), 0.1 * rng.standard_normal(classes)
        self.scale = 1.0 / np.sqrt(self.e)

    def _heads(self, t, n):  # [s, n·e] → [n, s, e]
        return t.reshape(t.shape[0], n, self.e).transpose(1, 0, 2)

    def forward(self, x):
        """Every intermediate of one sample x [s, d] (float64)."""
        s = x.shape[0]
        f = {
            "x": x,
            "q": self._heads(x @ self.wq, self.h),
            "k": self._heads(x @ self.wk, self.kv),
            "v": self._heads(x @ self.wv, self.kv),
        }
        f["P"] = f["q"] @ f["k"].transpose(0, 2, 1)  # k, v broadcast over heads when kv = 1
        f["S"] = self.scale * f["P"]
        masked = np.triu(np.ones((s, s), bool), 1) if self.causal else np.zeros((s, s), bool)
        f["S'"] = np.where(masked, -np.inf, f["S"])
        e = np.exp(f["S'"] - f["S'"].max(-1, keepdims=True))
        f["A"] = e / e.sum(-1, keepdims=True)
        f["O"] = f["A"] @ f["v"]
        f["O2"] = f["O"].transpose(1, 0, 2).reshape(s, self.d)
        f["h"] = f["O2"] @ self.wo + self.bo
        f["u"] = x + f["h"]
        f["logits"] = f["u"][0] @ self.wc + self.bc
        return f

    def relevance(self, x, mode="attnlrp", eps=1e-6, target=None):
        f = self.forward(x)
        t = int(np.argmax(f["logits"])) if target is None else target
        r = np.zeros_like(f["logits"])
        r[t] = f["logits"][t]
        r_u = np.zeros_like(f["u"])
        r_u[0] = linear_rel(f["u"][:1], self.wc, f["logits"][None], r[None], eps)[0]
        q = r_u / stab(f["u"], eps)
        r_x, r_h = x * q, f["h"] * q
        r_o2 = linear_rel(f["O2"], self.wo, f["h"], r_h, eps)
        r_o = self._heads(r_o2, self.h)
        half = 0.5 if mode == "attnlrp" else 1.0
        r_v = np.zeros_like(f["v"])
        r_q, r_k = np.zeros_like(f["q"]), np.zeros_like(f["k"])
        for i in range(self.h):
            kv = i if self.kv > 1 else 0
            r_a, r_vi = product_rel(f["A"][i], f["v"][kv], r_o[i], eps)
            r_v[kv] += half * r_vi
            if mode == "cplrp":
                continue
            r_s = softmax_rel(f["S'"][i], f["A"][i], half * r_a)  # the mask's −inf: R = 0 there
            r_qi, r_kt = product_rel(f["q"][i], f["k"][kv].T, r_s, eps)  # R_S = R_P (a scale)
            r_q[i], r_k[kv] = r_q[i] + half * r_qi, r_k[kv] + half * r_kt.T
        flat = lambda t: t.transpose(1, 0, 2).reshape(x.shape[0], -1)
        z = lambda w: x @ w
        for w, rr in ((self.wq, r_q), (self.wk, r_k), (self.wv, r_v)):
            if np.any(rr):
                r_x = r_x + linear_rel(x, w, z(w), flat(rr), eps)
        return r_x, f["logits"], t

    def onnx_model(self, opset=17):
        """The block as torch.onnx writes attention: batch and sequence dynamic, float32 weights."""
        d, h, kv, e = self.d, self.h, self.kv, self.e
        inits, nodes = [], []

        def c(name, value, dtype=np.float32):
            inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
            return name

        def n(op, ins, out, **attrs):
            nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
            return out

        i64 = lambda name, v: c(name, v, np.int64)
        shape = n("Shape", ["x"], "shape")
        bs = n("Slice", [shape, i64("zero1", [0]), i64("two1", [2])], "bs")
        for name, w, heads in (("q", self.wq, h), ("k", self.wk, kv), ("v", self.wv, kv)):
            proj = n("MatMul", ["x", c(f"w{name}", w)], f"{name}_proj")
            split = n("Concat", [bs, i64(f"{name}_he", [heads, e])], f"{name}_shape", axis=0)
            n("Transpose", [n("Reshape", [proj, split], f"{name}_split")], f"{name}_heads", perm=[0, 2, 1, 3])
        kt = n("Transpose", ["k_heads"], "k_t", perm=[0, 1, 3, 2])
        p = n("MatMul", ["q_heads", kt], "P")
        s = n("Mul", [p, c("scale", self.scale)], "S")
        if self.causal:
            seq = n("Gather", [shape, i64("one", 1)], "seq", axis=0)
            pos = n("Range", [i64("r0", 0), seq, i64("r1", 1)], "pos")
            later = n(
                "Greater",
                [n("Unsqueeze", [pos, i64("ax0", [0])], "cols"), n("Unsqueeze", [pos, i64("ax1", [1])], "rows")],
                "later",
            )
            s = n("Where", [later, c("minus_inf", -np.inf), s], "S_masked")
        a = n("Softmax", [s], "A", axis=-1)
        o = n("MatMul", [a, "v_heads"], "O")
        merged = n("Concat", [bs, i64("d1", [d])], "merged_shape", axis=0)
        o2 = n("Reshape", [n("Transpose", [o], "O_t", perm=[0, 2, 1, 3]), merged], "O2")
        hid = n("Add", [n("MatMul", [o2, c("wo", self.wo)], "h_mm"), c("bo", self.bo)], "h")
        u = n("Add", ["x", hid], "u")
        first = n("Gather", [u, i64("tok", 0)], "first", axis=1)
        n("Gemm", [first, c("wc", self.wc), c("bc", self.bc)], "logits")
        graph = helper.make_graph(
            nodes,
            "attention_block",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", self.wc.shape[1]])],
            inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
