"""Why a float32 relevance map can sit far from its float64 one on a ReLU network: units whose forward
value is near 0 come out of the float32 forward with another sign (or exactly 0) than in float64.

    python benchmarks/relu_flips.py seresnext26d_32x4d --samples 64     # ~35 s on 2 cores (timm cached)

LXT's map (and lrpc's at ε → 0) is R = x ⊙ ∂y/∂x, and through a ReLU ∂relu(z)/∂z = 𝟙[z > 0]. Where a
residual sum z = a + b cancels (|z| below the forward's round-off, ~1e-6·|a| in float32), float32 and
float64 can disagree on the sign of z: the backward passes the whole gradient g of that unit in one
and none in the other. lrpc's residual rule sees the same thing as

    R_a = a ⊙ R/z,   R_b = b ⊙ R/z,   R = relu(z) ⊙ g   →   R/z = g wherever z > 0,

so a flipped unit whose own relevance z·g is ~0 still sends a·g and b·g (O(|a|·|g|), opposite signs,
down different paths) to the input. Both toolboxes meet these flips ("flip" below); which units flip
depends on each float32 forward's rounding, not on the backward.

LRP has one more: a linear unit (no ReLU after it) whose float32 value is exactly 0.0 where float64's
is not ("zero" below). Its incoming relevance is R = z ⊙ c = 0, so LRP-ε passes x_i w_i R/(z + ε) = 0
to its inputs, where the gradient passes x_i w_i c (summing to z·c = 0 too) and float64 LRP, whose
|z| ≫ ε, passes the same. LRP-ε of the float32 forward is 0 there by definition, at any ε > 0.

Per sample (the zoo's model, N(0, 1) inputs, seed 11; the target is lrpc's float32 top logit):
* lrpc f32: lrpc `epsilon:eps=1e-12` (`product=gate-constant` where there are SE products) in
  onnxruntime, relative L2 from LXT float64; its flips and zeros: lrpc's file in onnxruntime (the
  tracked tensors added as outputs) against the exported model in float64 (double_ops.py);
* LXT f32: LXT's own float32 map from its float64 one; its flips: torch's float32 forward against
  torch's float64 one (gradients do not depend on a linear unit's value: no zeros to count).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lxt_ref  # noqa: E402
from double_ops import run_double  # noqa: E402


def sign_flips(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sample: how many entries of `a` and `b` ([batch, ...]) disagree on z > 0."""
    return ((a > 0) != (b > 0)).reshape(len(a), -1).sum(1)


def lost_zeros(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sample: how many entries are exactly 0 in `a` (float32) and not in `b` (float64)."""
    return ((a == 0) & (b != 0)).reshape(len(a), -1).sum(1)


def tracked(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(the tensors Relu nodes read, the Conv/Gemm outputs that no Relu reads)."""
    relu = list(dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "Relu"))
    linear = [n.output[0] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.output[0] not in relu]
    return relu, linear


def _flat(values: dict, names: list[str], batch: int) -> np.ndarray:
    parts = [np.asarray(values[t], np.float64).reshape(batch, -1) for t in names]
    return np.concatenate(parts, 1) if parts else np.zeros((batch, 0))


def torch_relu_inputs(model: nn.Module, x: np.ndarray, dtype) -> np.ndarray:
    """Every nn.ReLU input of `model` run in `dtype`, [batch, units] in float64."""
    view, seen = copy.deepcopy(model).to(dtype).eval(), []
    for module in view.modules():
        if isinstance(module, nn.ReLU):
            module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().double().reshape(len(x), -1)))
    with torch.no_grad():
        view(torch.as_tensor(x, dtype=dtype))
    return torch.cat(seen, 1).numpy() if seen else np.zeros((len(x), 0))


def lrpc_float32(source: bytes, model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """(relevance, top logit index, {"relu": Relu inputs, "linear": linear outputs} [batch, units]) of lrpc's
    ε = 1e-12 file in onnxruntime; the tensors are the exported model's (`tracked(source)`)."""
    import lrpc

    rule_map = ["product=gate-constant"] if lxt_ref.has_products(model) else []
    explained = lrpc.compile(source, rule="epsilon:eps=1e-12", rule_map=rule_map)
    relu, linear = tracked(onnx.load_from_string(source))
    names = ["relevance", "logits", *relu, *linear]
    explained.graph.output.extend(
        onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in names[2:]
    )
    session = ort.InferenceSession(explained.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(names, {"input": x})))
    units = {"relu": _flat(values, relu, len(x)), "linear": _flat(values, linear, len(x))}
    return values["relevance"], values["logits"].argmax(1), units


def onnx_double(source: bytes, x: np.ndarray) -> dict:
    """The exported model's tracked tensors in float64 (double_ops), as `lrpc_float32` gives them."""
    model = onnx.load_from_string(source)
    relu, linear = tracked(model)
    values = run_double(model, {"input": x}, relu + linear)
    return {"relu": _flat(values, relu, len(x)), "linear": _flat(values, linear, len(x))}


def _summary(label: str, errors: np.ndarray, goal: float = 1e-5) -> str:
    return (
        f"{label}: median {np.median(errors):.1e}, 90% {np.quantile(errors, 0.9):.1e}, max {errors.max():.1e}, "
        f"> {goal:.0e} on {(errors > goal).sum()}/{len(errors)}"
    )


def main(argv=None) -> int:
    import modern_zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a timm name of benchmarks/modern_zoo.py's list (its first entry of that name)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--per-sample", action="store_true", help="print every sample's figures")
    args = parser.parse_args(argv)
    name, kwargs, size = next(m for m in modern_zoo.MODELS if m[0] == args.model)
    model, source = modern_zoo.build(name, kwargs, size)
    x = torch.randn(args.samples, 3, size, size, generator=torch.Generator().manual_seed(11)).numpy()
    relevance, target, single_units = lrpc_float32(source, model, x)
    reference = lxt_ref.lxt_relevance(lxt_ref.lxt_view(model, "gate-constant"), x, target)[0]
    ours = np.array(lxt_ref.relative_l2(relevance, reference))
    single = lxt_ref.lxt_relevance(lxt_ref.lxt_view(model, "gate-constant", torch.float32), x, target)[0]
    theirs = np.array(lxt_ref.relative_l2(single, reference))
    double_units = onnx_double(source, x)
    flips_ort = sign_flips(single_units["relu"], double_units["relu"])
    zeros_ort = lost_zeros(single_units["linear"], double_units["linear"])
    z64 = torch_relu_inputs(model, x, torch.float64)
    flips_torch = sign_flips(torch_relu_inputs(model, x, torch.float32), z64)
    print(
        f"{modern_zoo.key(name, kwargs)} at {size}×{size}, {args.samples} samples; per sample {z64.shape[1]} ReLU "
        f"inputs, {double_units['linear'].shape[1]} linear outputs no ReLU reads"
    )
    for label, errors, events in (("lrpc f32", ours, flips_ort + zeros_ort), ("LXT f32", theirs, flips_torch)):
        print(_summary(label, errors))
        for part, keep in (("  with a flip or zero", events > 0), ("  without", events == 0)):
            print(_summary(f"{part} ({keep.sum()})", errors[keep]) if keep.any() else f"{part}: none")
    if args.per_sample:
        print("sample  lrpc f32  flips  zeros   LXT f32  flips")
        for i in range(args.samples):
            print(
                f"{i:6d}  {ours[i]:8.1e}  {flips_ort[i]:5d}  {zeros_ort[i]:5d}   {theirs[i]:7.1e}  {flips_torch[i]:5d}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
