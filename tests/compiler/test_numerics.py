"""Numerics at the edges (issue 10, item 3): the relevance is never NaN or Inf, for every LRP rule, the
composites EpsilonPlusFlat and EpsilonGammaBox and the gradient methods, on a CNN
(conv 3×3 → ReLU → max pool → conv 3×3 → ReLU → dense → ReLU → dense) whose arithmetic is pushed:

    dead units      the second conv's weights and bias all 0: z = 0 exactly for the whole layer, so its ReLU
                    passes 0 on and the dense layer after it has z = b (or 0 without biases). Relevance still
                    reaches the dead layer (flat and w² pass it by the weights alone), where every rule divides
                    by a stabilized 0: s = R / (0 + ε), and R_in = x ⊙ Wᵀs with W = 0, x⁺W⁺ = 0, ….
    dead ReLUs      its bias −100 instead: z ≤ −100, every ReLU off.
    zero input      x = 0: without biases every z = 0 and the logits are 0; with biases z = b.
    huge weights    the first conv's weights × 1e20 (× 1e3 in float16), the forward stays finite; W² is then
                    1e40, beyond float32's 3.4e38 (float16: 65504), and a w² rule that squares W overflows to
                    Inf (R/Inf = 0 against W² = Inf: NaN).
    tiny weights    the first conv × 1e-30 (× 1e-4 in float16): W² underflows to 0, z = ε-sized.
    tiny everywhere every weight × 1e-10 (× 1e-2 in float16): the logits underflow towards 0.
    float16         each case also with float16 weights and input (lrpc computes relevance in the model's type).

Each case also runs without biases. The forward outputs must be finite too: a case whose logits overflow
would test nothing. Before the fixes of this test's commit: w² with huge weights gave NaN (float32 and
float16), and every float16 model failed at run time in its MaxPool's relevance (onnxruntime's CPU
ScatterElements has no float16 kernel for reduction='add'); every other case was already finite.
lrpc supports float16 models: relevance is computed in float16, scatter sums in float32.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from onnx import numpy_helper

import lrpc
import oracle
from oracle import Net

RULES = ["zero", "epsilon", "zplus", "alpha1beta0", "alpha2beta1", "w2", "flat", "gamma", "zbox:low=-1,high=1"]
COMPOSITES = ["EpsilonPlusFlat", "EpsilonGammaBox:low=-1,high=1"]
METHODS = [
    "gradient",
    "inputxgradient",
    "guidedbackprop",
    "deconvnet",
    "integratedgradients:steps=4",
    "smoothgrad:samples=4",
]
SPECS = [f"rule:{r}" for r in RULES] + [f"composite:{c}" for c in COMPOSITES] + [f"method:{m}" for m in METHODS]
HUGE = {np.float32: 1e20, np.float16: 1e3}
TINY = {np.float32: 1e-30, np.float16: 1e-4}
TINY_ALL = {np.float32: 1e-10, np.float16: 1e-2}
CASES = ["dead_units", "dead_relus", "zero_input", "huge_weights", "tiny_weights", "tiny_everywhere"]


def _scaled(inits, names, factor):
    for name in names:
        inits[name] = (inits[name].astype(np.float64) * factor).astype(np.float32)


@functools.lru_cache(maxsize=None)
def model(case: str, dtype, bias: bool):
    net = Net((2, 6, 6), seed=3, use_bias=bias)
    net.conv(4, (3, 3), pads=[1, 1, 1, 1]).relu().maxpool((2, 2), (2, 2))
    net.conv(4, (3, 3), pads=[1, 1, 1, 1]).relu().flatten().gemm(8).relu().gemm(3)
    inits = net.inits  # w1 b1 (conv), w4 b4 (conv), w7 b7, w9 b9 (dense)
    if case == "huge_weights_off":  # the plain net
        pass
    elif case == "dead_units":
        _scaled(inits, [n for n in ("w4", "b4") if n in inits], 0.0)
    elif case == "dead_relus":
        inits["w4"] = (inits["w4"] * 1e-3).astype(np.float32)
        if bias:
            inits["b4"] = np.full_like(inits["b4"], -100.0)
        else:  # without a bias, all-negative weights on a non-negative input (the pooled ReLU)
            inits["w4"] = -np.abs(inits["w4"])
    elif case == "huge_weights":
        _scaled(inits, ["w1"], HUGE[dtype])
    elif case == "tiny_weights":
        _scaled(inits, ["w1"], TINY[dtype])
    elif case == "tiny_everywhere":
        _scaled(inits, [n for n in inits if n.startswith("w")], TINY_ALL[dtype])
    return net.model(dtype)


def inputs(case, dtype):
    x = np.random.default_rng(7).uniform(-1.0, 1.0, (3, 2, 6, 6))
    return (x * (case != "zero_input")).astype(dtype)


def compile_spec(proto, spec):
    kind, _, value = spec.partition(":")
    return lrpc.compile(proto, **{kind: value})


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("case", CASES)
def test_relevance_is_finite_for_every_rule(case, dtype, bias):
    proto = model(case, dtype, bias)
    x = inputs(case, dtype)
    bad = []
    for spec in SPECS:
        sess = oracle.session(compile_spec(proto, spec))
        outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))
        relevance = outputs.pop("relevance")
        assert relevance.dtype == dtype and relevance.shape == x.shape
        assert all(np.isfinite(y).all() for y in outputs.values()), f"{case}: the forward itself is not finite"
        if not np.isfinite(relevance).all():
            bad.append(f"{spec}: {int((~np.isfinite(relevance)).sum())} of {relevance.size} NaN/Inf")
    assert not bad, f"{case}, {np.dtype(dtype).name}, bias={bias}: " + "; ".join(bad)


def test_the_dead_layer_is_dead():
    """The dead-units case does what it says: the second conv's output (z) is exactly 0 everywhere, and the
    relevance still reaches the first layer under flat (it passes R by the weights alone)."""
    proto = model("dead_units", np.float32, True)
    conv2 = next(n for n in proto.graph.node if n.op_type == "Conv" and n.input[1] == "w4")
    assert not np.any(numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "w4")))
    sess = oracle.session(compile_spec(proto, "rule:flat"))
    relevance = sess.run(None, {"x": inputs("dead_units", np.float32)})[1]
    assert conv2.output[0] == "conv4" and np.abs(relevance).sum() > 0


@pytest.mark.parametrize(
    "dtype, power, tol", [(np.float32, 66, 1e-4), (np.float16, 6, 2e-2)], ids=["float32", "float16"]
)
@pytest.mark.parametrize(
    "spec", [f"rule:{r}" for r in RULES if not r.startswith("zbox")] + [f"composite:{c}" for c in COMPOSITES]
)
def test_huge_weights_scale_the_relevance(spec, dtype, power, tol):
    """Without biases every rule is positively homogeneous in the first layer's W, up to ε: with W × 2^power
    (exact in binary floating point) z₁, every later activation, the logits and so R are × 2^power. So the
    huge model's relevance × 2^-power must be the ordinary model's — not merely finite (w² squares W: 2^132 ≈
    5e39 is past float32's range, rules/squares.py rescales it). float16: 2^6, its 3 digits set the tolerance.
    zᴮ only as a first layer (EpsilonGammaBox): on later layers its fixed bounds do not scale with x."""
    plain = model("huge_weights_off", dtype, False)
    huge = Net((2, 6, 6), seed=3, use_bias=False)  # the same net, the first conv's weight × 2^power
    huge.conv(4, (3, 3), pads=[1, 1, 1, 1]).relu().maxpool((2, 2), (2, 2))
    huge.conv(4, (3, 3), pads=[1, 1, 1, 1]).relu().flatten().gemm(8).relu().gemm(3)
    _scaled(huge.inits, ["w1"], 2.0**power)
    x = inputs("huge_weights", dtype)
    r_plain = oracle.session(compile_spec(plain, spec)).run(None, {"x": x})[1].astype(np.float64)
    r_huge = oracle.session(compile_spec(huge.model(dtype), spec)).run(None, {"x": x})[1]
    oracle.assert_rel_close(r_huge.astype(np.float64) * 2.0**-power, r_plain, tol, what=f"{spec}: R / 2^{power}")
