"""An independent float64 reference for LRP ("the oracle"): numpy only, no lrpc code, no onnxruntime
in its arithmetic. The tests compare lrpc's compiled models with it.

Layout (each module's docstring has the details):

  rules.py        the rule math on explicit matrices, once: stab, pos/neg, the rules, RULES by spec
  layers.py       explicit matrices of the linear layers (Gemm, MatMul, Conv, ConvTranspose, average
                  pooling, means), MaxPool windows, Resize matrices, same_pads, affine composition
  ops.py          the DAG ops (LinearOp, RouteOp, FnOp) and the constructors builders and reader share
  dag.py          the one driver: forward, start relevance, the reverse walk (relevance reaching a value
                  from several readers is summed), float32 sensitivity κ, pick_inputs
  check.py        onnxruntime sessions and the comparison of lrpc's outputs with the oracle's
  net.py          chain networks (`Net`: an ONNX model and its layer list; `chain` makes it a DagNet)
  graphnet.py     `GraphNet`: DAG networks built twice (ONNX nodes and oracle ops); `Cases`
  onnx_reader.py  `read_model`: any supported ONNX model as a DagNet, canonized (BN/affine folding)
  shapes.py       the reader's shape-only ops and constant folding
  modern.py       modern layers for GraphNet: self-gated activations, gates, norms
  attention.py    one attention block, its ONNX graph and AttnLRP / CP-LRP relevance

Every tensor of one sample is a float64 array; a linear layer is z = W x + b on the flattened sample,
W [n_out, n_in] built by index loops, S its 0/1 connectivity. stab(z) = z + ε·sign₀(z), sign₀(0) = +1;
a⁺ = max(a, 0), a⁻ = min(a, 0) (for x, W, b). A rule maps R_out to R_in:

  zero          s = R / z  (s = 0 where z == 0);                      R_in = x * (W^T s)
  epsilon(eps)  s = R / stab(z);                                      R_in = x * (W^T s)
  alphabeta     za = W+ x+ + W- x- + b+,  sa = R / stab(za)           (activator)
   (a - b = 1)  zi = W- x+ + W+ x- + b-,  si = R / stab(zi)           (inhibitor)
                R_in = a (x+ * W+^T sa + x- * W-^T sa) - b (x+ * W-^T si + x- * W+^T si)
  w2            z = (W*W) 1 + b*b,  s = R / stab(z);                  R_in = (W*W)^T s
  flat          z = S 1 (no bias),  s = R / stab(z);                  R_in = S^T s
  gamma(g)      Wg+ = W + g W+,  Wg- = W + g W-,  bg+ = b + g b+,  bg- = b + g b-
                zp = Wg+ x+ + Wg- x- + bg+,  sp = [z > 0] R / stab(zp)
                zn = Wg- x+ + Wg+ x- + bg-,  sn = [z < 0] R / stab(zn)
                R_in = x+ * Wg+^T sp + x- * Wg-^T sp + x+ * Wg-^T sn + x- * Wg+^T sn
  zbox(l, h)    z = W x - W+ l - W- h,  s = R / stab(z);              R_in = x * W^T s - l * W+^T s - h * W-^T s

Other ops: Add/Sub/Sum split R by their terms, Rᵢ = σᵢxᵢ ⊙ R / stab(Σ σⱼxⱼ) (summed over broadcast
copies); routing ops (Concat, Split, Slice, Pad, Gather, Tile, Expand, Flatten, Transpose) send each
element's R back to its source; MaxPool/ReduceMax give R to each window's first maximum; ReduceSum
and linear/cubic Resize R_x = x ⊙ Aᵀ(R / stab(y)), nearest Resize Aᵀ R; activations pass R unchanged.
Outside linear layers ε is the rule's: 0 for "zero", the given eps for "epsilon:eps=…", 1e-6 otherwise.
The explained output y starts the walk with R = onehot(t) ⊙ y, t = argmax(y) (first maximum) or a given
unit; an output Softmax is skipped (lrpc explains its input).

This package exports the names the tests use most: the rules, the layer matrices, the chain API on
layer lists (forward, explain, pick_inputs, check_against_oracle, Net) and the onnxruntime helpers.
The DAG driver's own functions (on a DagNet) are oracle.dag's.
"""

from .check import assert_rel_close, rel_err_per_sample, run, session, softmax
from .dag import SENSITIVITY_LIMIT, well_conditioned
from .layers import Linear, conv_layer, gemm_layer, matmul_layer, same_pads
from .net import (
    Elementwise,
    Identity,
    MaxPool,
    Net,
    Permute,
    Relu,
    check_against_oracle,
    explain,
    forward,
    maxpool_layer,
)
from .net import pick_inputs
from .rules import EPS, RULES, ZBOX_HIGH, ZBOX_LOW, neg, pos, rule_alphabeta, rule_epsilon, rule_flat, rule_gamma
from .rules import rule_w2, rule_zbox, rule_zero, stab

__all__ = [
    "EPS", "RULES", "SENSITIVITY_LIMIT", "ZBOX_HIGH", "ZBOX_LOW", "Elementwise", "Identity", "Linear", "MaxPool",
    "Net", "Permute", "Relu", "assert_rel_close", "check_against_oracle", "conv_layer", "explain", "forward",
    "gemm_layer", "matmul_layer", "maxpool_layer", "neg", "pick_inputs", "pos", "rel_err_per_sample", "rule_alphabeta",
    "rule_epsilon", "rule_flat", "rule_gamma", "rule_w2", "rule_zbox", "rule_zero", "run", "same_pads", "session",
    "softmax", "stab", "well_conditioned",
]  # fmt: skip
