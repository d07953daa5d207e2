"""What iNNvestigate 2.1.2 does with BatchNormalization, measured against lrpc on ``cnn_bn``.

Runs in the project's .venv; reads the files benchmarks/innvestigate_ref.py writes (``cnn_bn.onnx``,
``cnn_bn.npz``). A BN layer computes, per channel, from its input c (the Conv's output here):

    exact (lrpc, docs/design.md §2.2):   y = k·c + b,     k  = γ/√(σ² + ε),   b  = β − γμ/√(σ² + ε)
    iNNvestigate:              y' = k'·c + b',  k' = γ/√(σ⁴ + ε),   b' = β − μ/√(σ⁴ + ε)

(innvestigate/backend/graph.py `apply_mapping_to_fused_bn_layer`, fuse_mode "one_linear": it squares
the variance and drops γ from the mean term). It does not fold this into the Conv: every lrp.*
analyzer has a `bn_layer_rule` and applies it to a surrogate per-channel layer y' = k'·c + b' in BN's
place, as a backward step of its own on the true c (the forward pass, every activation included,
stays Keras' exact one); then the Conv's own rule follows. With R the relevance of BN's output:

    lrp.z, lrp.epsilon            R_c = c·k'/(c·k' + b' [+ ε·sign₀]) · R      (Z: safe division; ε = 1e-7)
    lrp.alpha_1_beta_0, _2_beta_1 the analyzer's α-β rule on (k', b'), the whole b' in both terms
    lrp.z_plus                    α1β0 without bias: R_c = [c > 0]·R for k' > 0 — no formula involved
    lrp.w_square, lrp.flat        R_c = k'²/k'²·R = R — no formula involved
    presets A/B (and _flat)       AlphaBetaX2m100: R_c = 2·c⁺k'⁺/(c⁺k'⁺ + b'⁺)·R − c⁺k'⁻/(c⁺k'⁻ + b'⁻)·R

(Only the generic `lrp` analyzer left without a bn_layer_rule uses BatchNormalizationReverseLayer,
R_c = c·(y − β)/((c − μ)·y)·R = c·k/y·R: the Z rule with the exact k.)

(a) lrpc on the exported model (tf2onnx folds BN into the Conv, exactly) against iNNvestigate.
(b) the same model with each BN split back out of its Conv into layers of unchanged forward,

    Conv(W, b_c) → depthwise 1×1 λ·(k', b')  [iNNvestigate's BN rule] → depthwise 1×1 (k/(λk'), b − b'·k/k')  [w²]

w² on a 1×1 depthwise layer passes relevance: R·w²/(w² + ε), lrpc's ε = 1e-7 against w = k/(λk') ≥ 1e3
with λ = 1e-4, so < 1e-13 off. The Z and α-β rules are scale-free; ε is scaled with the surrogate
(λ·1e-7). Presets: γ > 0 here makes k' > 0, so their rule is 2 × α1β0 on (k', b'⁺); lrpc has no rule
with a factor 2, so the surrogate takes α1β0 with bias b'⁺ and the result is multiplied by
2^(number of BNs) (every LRP step is linear in R and the model is sequential).

Each comparison runs twice: in float32 against iNNvestigate as it runs (lrpc in onnxruntime), and in
float64 on both sides (iNNvestigate under Keras floatx float64; lrpc's explained graph in onnx's
reference evaluator, lrpc.verify.float64). Where y' ≈ 0 their rule divides by a tiny number, so float32
round-off grows: the float64 column isolates the formula.

    python benchmarks/innvestigate_bn.py [--data-dir out/fidelity/innvestigate]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import lrpc
from lrpc.verify.float64 import as_double, run_double

MODEL = "cnn_bn"
SURROGATE, RESTORE = "__innvestigate_bn", "__restore_forward"
SCALE = 1e-4  # λ: the surrogate computes λ·(k'·c + b'), so the restore layer's weights k/(λk') are ≥ 1e3
EPS = 1e-7  # iNNvestigate's ε (lrp.epsilon), scaled by λ on the surrogate
# analyzer → (lrpc options, the surrogate's rule, note); "preset": the AlphaBetaX emulation
ANALYZERS = {
    "lrp.z": (dict(rule="zero"), "zero", "BN: Z rule on (k', b'), then the Conv's"),
    "lrp.epsilon": (dict(rule="epsilon"), f"epsilon:eps={EPS * SCALE:g}", "BN: ε rule on (k', b'), then the Conv's"),
    "lrp.alpha_1_beta_0": (dict(rule="alpha1beta0"), "alpha1beta0", "BN: α1β0 on (k', b'), then the Conv's"),
    "lrp.alpha_2_beta_1": (dict(rule="alpha2beta1"), "alpha2beta1", "BN: α2β1 on (k', b'), then the Conv's"),
    "lrp.z_plus": (dict(rule="zplus"), "zplus", "BN: z⁺ without bias, R where c > 0: formula-free"),
    "lrp.w_square": (dict(rule="w2"), "flat", "BN: w² passes R unchanged: formula-free"),
    "lrp.flat": (dict(rule="flat"), "flat", "BN: flat passes R unchanged: formula-free"),
    "lrp.sequential_preset_a": (dict(composite="A"), "preset", "BN: AlphaBetaX(2,0;1,0) = 2× α1β0 on (k', b'⁺)"),
    "lrp.sequential_preset_b": (dict(composite="B"), "preset", "BN: AlphaBetaX(2,0;1,0) = 2× α1β0 on (k', b'⁺)"),
}
BATCHES = (1, 8)


class BNLayer(NamedTuple):
    """One BatchNormalization and the Conv2D feeding it (Keras kernel layout [kh, kw, in, out])."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: np.ndarray
    conv_kernel: np.ndarray
    conv_bias: np.ndarray


def bn_params(data) -> dict[str, BNLayer]:
    """Keras BN name → BNLayer in float64, from innvestigate_ref's ``bn1.gamma``-style arrays."""
    names = sorted({k.split(".")[0] for k in data.keys() if k.endswith(".moving_variance")})
    keys = ("gamma", "beta", "moving_mean", "moving_variance", "epsilon", "conv_kernel", "conv_bias")
    return {n: BNLayer(*(np.asarray(data[f"{n}.{k}"], np.float64) for k in keys)) for n in names}


def exact_fold(gamma, beta, mean, var, eps, *_):
    """(k, b) with BN(a) = k·a + b."""
    k = gamma / np.sqrt(var + eps)
    return k, beta - mean * k


def innvestigate_fold(gamma, beta, mean, var, eps, *_):
    """(k', b') of iNNvestigate 2.1.2's surrogate layer: σ² squared, γ missing from the mean term."""
    root = np.sqrt(var**2 + eps)
    return gamma / root, beta - mean / root


def fused_conv(graph: onnx.GraphProto, bn: str) -> onnx.NodeProto:
    """The Conv tf2onnx folded BN `bn` into (its output is named after the BN, e.g. ``.../bn1/FusedBatchNormV3:0``)."""
    found = [n for n in graph.node if n.op_type == "Conv" and any(f"/{bn}/" in o for o in n.output)]
    if len(found) != 1:
        raise ValueError(f"expected one Conv carrying BN {bn}, found {len(found)}")
    return found[0]


def _depthwise(name, x, y, scale, shift, graph, dtype) -> onnx.NodeProto:
    """A 1×1 depthwise Conv y = scale·x + shift per channel (NCHW); its weights go into `graph`."""
    c = scale.size
    graph.initializer.extend(
        [
            numpy_helper.from_array(scale.reshape(c, 1, 1, 1).astype(dtype), f"{name}.w"),
            numpy_helper.from_array(shift.astype(dtype), f"{name}.b"),
        ]
    )
    return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, kernel_shape=[1, 1], group=c)


def _set_initializer(graph, name, value) -> None:
    next(t for t in graph.initializer if t.name == name).CopyFrom(numpy_helper.from_array(value, name))


def split_bn(model: onnx.ModelProto, layers: dict[str, BNLayer], preset=False, dtype=np.float32) -> onnx.ModelProto:
    """A copy of `model` (in `dtype`) whose every BN-fused Conv is Conv(W, b_c) → surrogate λ·(k', b') →
    restore, with the same forward; `preset` gives the surrogate bias b'⁺ (AlphaBetaX emulation, k' > 0)."""
    model = as_double(model) if dtype == np.float64 else onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for bn, layer in layers.items():
        conv = fused_conv(graph, bn)
        k, b = exact_fold(*layer)
        k_their, b_their = innvestigate_fold(*layer)
        if preset and not (k_their > 0).all():
            raise ValueError(f"{bn}: the preset emulation needs γ > 0")
        _set_initializer(graph, conv.input[1], layer.conv_kernel.transpose(3, 2, 0, 1).astype(dtype))
        _set_initializer(graph, conv.input[2], layer.conv_bias.astype(dtype))
        out = conv.output[0]
        conv.output[0] = f"{out}{SURROGATE}.in"
        k_s, b_s = SCALE * k_their, SCALE * (np.maximum(b_their, 0.0) if preset else b_their)
        nodes = [
            _depthwise(conv.name + SURROGATE, conv.output[0], f"{out}{SURROGATE}.out", k_s, b_s, graph, dtype),
            _depthwise(conv.name + RESTORE, f"{out}{SURROGATE}.out", out, k / k_s, b - b_s * k / k_s, graph, dtype),
        ]
        at = list(graph.node).index(conv) + 1
        for i, node in enumerate(nodes):
            graph.node.insert(at + i, node)
    return model


def relevance(model: onnx.ModelProto, x: np.ndarray, float64=False, **options) -> np.ndarray:
    """lrpc's relevance map of x (iNNvestigate's convention): onnxruntime, or with `float64` the explained
    graph in double precision (onnx's reference evaluator; onnxruntime has no double Conv)."""
    explained = lrpc.compile(model, convention="innvestigate", **options)
    if float64:
        return run_double(explained, {"input": x}, ["relevance"])["relevance"]
    sess = ort.InferenceSession(explained.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["relevance"], {"input": x})[0]


def their_formula(model, layers, x, analyzer, float64=False) -> np.ndarray:
    """lrpc on the split model: iNNvestigate's BN rule on its own (k', b'), everything else unchanged."""
    options, surrogate, _ = ANALYZERS[analyzer]
    preset = surrogate == "preset"
    rule_map = [f"*{SURROGATE}={'alpha1beta0' if preset else surrogate}", f"*{RESTORE}=w2"]
    split = split_bn(model, layers, preset, np.float64 if float64 else np.float32)
    r = relevance(split, x, float64, rule_map=rule_map, **options)
    return r * 2.0 ** len(layers) if preset else r


def rel_l2(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def compare(model, layers, x, reference, analyzer, float64=False) -> tuple[float, float]:
    """(lrpc on the exact model vs iNNvestigate, lrpc with iNNvestigate's BN rule vs iNNvestigate)."""
    correct = relevance(model, x, float64, **ANALYZERS[analyzer][0])
    return rel_l2(correct, reference), rel_l2(their_formula(model, layers, x, analyzer, float64), reference)


def bn_rows(data_dir) -> list[dict]:
    """One row per (analyzer, batch): rel_correct and rel_their_formula against iNNvestigate as it runs
    (float32, lrpc in onnxruntime); the same with both sides in float64 (``_f64``); innvestigate_f32_f64,
    iNNvestigate's own float32 round-off (its float32 result against its float64 one); note."""
    data_dir = Path(data_dir)
    model = onnx.load(str(data_dir / f"{MODEL}.onnx"))
    data = np.load(data_dir / f"{MODEL}.npz")
    layers = bn_params(data)
    rows = []
    for analyzer, (_, _, note) in ANALYZERS.items():
        for batch in BATCHES:
            x, key = data["x"][:batch], f"{analyzer}|b{batch}"
            a, b = compare(model, layers, x, data[key], analyzer)
            a64, b64 = compare(model, layers, x, data[f"{key}|f64"], analyzer, float64=True)
            rows.append(
                dict(
                    analyzer=analyzer,
                    batch=batch,
                    rel_correct=a,
                    rel_their_formula=b,
                    rel_correct_f64=a64,
                    rel_their_formula_f64=b64,
                    innvestigate_f32_f64=rel_l2(data[key], data[f"{key}|f64"]),
                    note=note,
                )
            )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("out/fidelity/innvestigate"))
    args = ap.parse_args(argv)
    print("relative L2 error against iNNvestigate: lrpc with the exact BN fold | with iNNvestigate's BN rule")
    print(
        f"{'analyzer':24} {'batch':>5} {'f32 exact':>10} {'f32 their':>10} {'f64 exact':>10} {'f64 their':>10} "
        f"{'iNNv f32↔f64':>12}  note"
    )
    for r in bn_rows(args.data_dir):
        print(
            f"{r['analyzer']:24} {r['batch']:>5} {r['rel_correct']:10.2e} {r['rel_their_formula']:10.2e} "
            f"{r['rel_correct_f64']:10.2e} {r['rel_their_formula_f64']:10.2e} {r['innvestigate_f32_f64']:12.2e}  "
            f"{r['note']}"
        )


if __name__ == "__main__":
    main()
