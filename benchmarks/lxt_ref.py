"""LXT 2.1's own rules (AttnLRP / CP-LRP) on torch convnets: an independent reference for lrpc's rules of
self-gated activations, squeeze-excitation products and LayerNorm (docs/design.md §3.4).

LXT computes relevance as input ⊙ (modified gradient): relevance = x ⊙ x.grad after a backward pass
from the target logit, with the gradient of some modules changed by LXT's rule functions
(`lxt.efficient.rules`) and module patches (`lxt.efficient.patches`). `lxt_view(model, product)`
applies them to a copy of a torch model (float64 unless told), module by module:

* element-wise activations (SiLU, GELU, HardSwish, HardSigmoid, Sigmoid, Tanh, Mish, ReLU6 and
  timm's own classes of these): LXT's `non_linear_forward`, i.e. `identity_rule_implicit` — the
  identity rule R_x = R_y (the gradient times f(x)/(x + 1e-10)). ReLU keeps its plain gradient, which
  is the identity rule exactly (x·𝟙[x>0] = relu(x)), as LXT leaves it: its 1e-10 acts like an ε at
  units with x ≈ 1e-9, whose gradient it changes by a tenth. HardSigmoid and HardSwish compute with
  the exported file's α = float32(1/6) (ONNX keeps α as a float attribute): torch's exact 1/6 is a
  3e-8 different function, which the half rule's R/s at pre-gate logits s ≈ 0 amplifies (measured on
  MobileNetV3-Small, float64, ε = 1e-12: 1.7e-3 with torch's 1/6, 1.3e-6 with the file's α);
* LayerNorm over the last axis (nn.LayerNorm, timm's LayerNorm): LXT's `layer_norm_forward` (the std
  detached, the mean kept); timm's channels-first LayerNorm2d: the same between its two permutes;
* a squeeze-excitation product x · gate(s) (timm's SqueezeExcite, SEModule, EffectiveSEModule, ECA,
  whose forward ends in the product `x * self.gate(...)`): `product="gate-constant"` detaches the gate's
  output (LXT's `stop_gradient`, CP-LRP: all relevance to x); `product="half"` puts LXT's
  `divide_gradient(·, 2)` on the product (AttnLRP's uniform rule: each factor gets half);
* ConvNeXt-V2's GlobalResponseNorm x + γ·(x·n(x)) + β, n(x) = ‖x‖_HW / mean_C ‖x‖_HW: the same
  forward with `stop_gradient` on n(x) — the normalizer held fixed, as LXT's RMSNorm patch holds its
  rsqrt (LXT has no GRN patch of its own; this one is written here);
* convs, linears, BatchNorm (eval mode), average and max pools, residual sums, layer scales,
  flatten, dropout (eval): the plain gradient. Gradient ⊙ input through a linear map is LRP-0 with
  the bias absorbing its share (ε → 0), and through max pooling the winner takes all.

A leaf module of any other type is refused (`UnknownModule`), so nothing is silently left to the plain
gradient. Functional nonlinearities inside a module's forward are not visible here; the timm families
this is used on (EfficientNet, MobileNetV3, ConvNeXt, SE-ResNeXt, RegNetY, GhostNet, MixNet) call
their activations as modules.

LXT's package `__init__` imports its transformers patch maps (`lxt.efficient.models`, which imports
`transformers`, not installed here); `import_lxt` loads `lxt.efficient.rules` and `lxt.efficient.patches`
— plain torch — without running those package initialisers. torchvision is stubbed
(benchmarks/torchvision_stub.py).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torchvision_stub import stub_torchvision  # noqa: E402

PRODUCT_RULES = ("gate-constant", "half")
SE_CLASSES = {"SqueezeExcite", "SEModule", "EffectiveSEModule", "SqueezeExciteCl", "EcaModule", "CecaModule"}
# ^ forward ends in `return x * self.gate(...)` (ECA: `x * y.expand_as(x)`, y the gate's output viewed)


class UnknownModule(TypeError):
    """A leaf module the LXT view has no rule for."""


def lxt_available() -> str | None:
    """None if LXT 2.1 can be used here, else why not (for pytest.skip)."""
    if importlib.util.find_spec("lxt") is None:
        return "lxt is not installed (pip install --no-deps lxt==2.1)"
    return None


def import_lxt():
    """(lxt.efficient.rules, lxt.efficient.patches), loaded without lxt's package initialisers."""
    if "lxt.efficient.patches" in sys.modules:
        return sys.modules["lxt.efficient.rules"], sys.modules["lxt.efficient.patches"]
    stub_torchvision()
    spec = importlib.util.find_spec("lxt")
    if spec is None:
        raise ImportError(lxt_available())
    root = Path(spec.submodule_search_locations[0])
    for name, path in (("lxt", root), ("lxt.efficient", root / "efficient")):
        if name not in sys.modules:  # an empty package: its submodules import, its __init__ does not run
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    return importlib.import_module("lxt.efficient.rules"), importlib.import_module("lxt.efficient.patches")


def _activation_types() -> tuple[type, ...]:
    types_ = [nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Mish, nn.ReLU6]
    if importlib.util.find_spec("timm") is not None:
        from timm.layers import activations as ta

        types_ += [
            getattr(ta, n)
            for n in (
                "Swish",
                "Mish",
                "Sigmoid",
                "Tanh",
                "HardSwish",
                "HardSigmoid",
                "HardMish",
                "GELU",
                "GELUTanh",
                "QuickGELU",
            )
            if hasattr(ta, n)
        ]
    return tuple(types_)


PLAIN = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Sequential,
    nn.ReLU,
)


ALPHA = float(np.float32(1 / 6))  # ONNX HardSigmoid's α attribute (HardSwish's function body holds the same)


def _onnx_hard(module):
    """HardSigmoid / HardSwish as the ONNX file computes them, α = float32(1/6) = (1 + 3.0e-8)/6, or None."""
    name = type(module).__name__.lower()
    if name == "hardsigmoid":
        return lambda x: torch.clamp(x * ALPHA + 0.5, 0.0, 1.0)
    if name == "hardswish":
        return lambda x: x * torch.clamp(x * ALPHA + 0.5, 0.0, 1.0)
    return None


def _is_layernorm2d(module) -> bool:
    return type(module).__name__ in ("LayerNorm2d", "LayerNorm2dFp32") and isinstance(module, nn.LayerNorm)


def lxt_view(model: nn.Module, product: str = "gate-constant", dtype=torch.float64) -> nn.Module:
    """An eval-mode copy of `model` in `dtype` with LXT's rules on its modules (see the module docstring)."""
    if product not in PRODUCT_RULES:
        raise ValueError(f"product must be one of {PRODUCT_RULES}, not {product!r}")
    rules, patches = import_lxt()
    view = copy.deepcopy(model).to(dtype).eval()
    activations = _activation_types()
    for name, module in view.named_modules():
        if hasattr(module, "inplace"):  # an in-place activation would overwrite the input LXT divides by
            module.inplace = False
        if type(module).__name__ in SE_CLASSES:
            if product == "gate-constant":
                module.gate.register_forward_hook(lambda m, args, out: rules.stop_gradient(out))
            else:
                module.register_forward_hook(lambda m, args, out: rules.divide_gradient(out, 2).clone())
        elif hasattr(module, "gate") and isinstance(module.gate, nn.Module):
            raise UnknownModule(f"{name}: a gated module of type {type(module).__name__} (not one of {SE_CLASSES})")
        if list(module.children()):
            continue
        if isinstance(module, activations):
            module.original_forward = _onnx_hard(module) or module.forward
            module.forward = types.MethodType(patches.non_linear_forward, module)
        elif _is_layernorm2d(module):
            module.forward = types.MethodType(_layer_norm_2d(patches.layer_norm_forward), module)
        elif type(module).__name__ == "GlobalResponseNorm":
            module.forward = types.MethodType(_grn_forward(rules.stop_gradient), module)
        elif isinstance(module, nn.LayerNorm):
            if len(module.normalized_shape) != 1:
                raise UnknownModule(f"{name}: LayerNorm over {module.normalized_shape} (LXT's rule: the last axis)")
            module.forward = types.MethodType(patches.layer_norm_forward, module)
        elif not isinstance(module, PLAIN):
            raise UnknownModule(f"{name}: no LXT rule for a {type(module).__module__}.{type(module).__name__}")
    return view


def _layer_norm_2d(layer_norm_forward):
    def forward(self, x):
        return layer_norm_forward(self, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    return forward


def _grn_forward(stop_gradient):
    def forward(self, x):  # timm's GlobalResponseNorm, its normalizer x_n held fixed (as LXT's RMSNorm rsqrt)
        x_g = x.norm(p=2, dim=self.spatial_dim, keepdim=True)
        x_n = stop_gradient(x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps))
        return x + torch.addcmul(self.bias.view(self.wb_shape), self.weight.view(self.wb_shape), x * x_n)

    return forward


def lxt_relevance(view: nn.Module, x, target) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevance x ⊙ x.grad, logits) of an `lxt_view`, from the logits `target` [batch] (int), in its dtype.

    The backward starts at gradient 1 on each sample's target logit: the relevance sums to that logit's
    value where the rules conserve — lrpc's start relevance."""
    dtype = next(view.parameters()).dtype
    x = torch.as_tensor(x, dtype=dtype).clone().requires_grad_(True)
    logits = view(x)
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1, 1)
    logits.gather(1, target).sum().backward()
    return (x * x.grad).detach(), logits.detach()


# ------------------------------------------------------------------------------ lrpc beside it


def export_onnx(model: nn.Module, x: torch.Tensor, opset: int = 17) -> bytes:
    """torch.onnx.export, TorchScript exporter: eval mode, dynamic batch, input `input`, output `logits`."""
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter DeprecationWarning, TracerWarnings
        torch.onnx.export(
            model.eval(),
            x[:1],
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return buffer.getvalue()


def has_products(model: nn.Module) -> bool:
    """Whether `model` has a squeeze-excitation product (lrpc refuses a product rule map that matches none)."""
    return any(type(m).__name__ in SE_CLASSES for m in model.modules())


def relative_l2(a, b) -> list[float]:
    """‖a − b‖₂ / ‖b‖₂ per sample (b the reference)."""
    import numpy as np

    a, b = (np.asarray(t, np.float64).reshape(len(t), -1) for t in (a, b))
    return (np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).tolist()


def compare(
    model: nn.Module, source: bytes, x, product: str = "gate-constant", eps: float = 1e-9, double: bool = True
) -> dict:
    """lrpc (`epsilon:eps=…`, `product=…` where the model has products) against LXT on the same weights.

    The target is each sample's top logit in lrpc's float32 run, handed to LXT. Returns per-sample
    relative L2 of lrpc's float32 map (onnxruntime, as deployed) and, with `double`, of the same
    explained graph in float64 (lrpc's double conversion, benchmarks/double_ops.py), against LXT in float64;
    LXT's own float32 map against its float64 one (what float32 alone costs on this model); both maps'
    sums and the explained logits."""
    import numpy as np
    import onnxruntime as ort

    import lrpc
    from double_ops import run_double

    rule_map = [f"product={product}"] if has_products(model) else []
    explained = lrpc.compile(source, rule=f"epsilon:eps={eps:g}", rule_map=rule_map)
    x = np.asarray(x, np.float32)
    session = ort.InferenceSession(explained.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input": x})))
    target = outputs["logits"].argmax(1)
    reference, logits = lxt_relevance(lxt_view(model, product), x, target)
    result = {
        "product": product if rule_map else None,
        "target": target.tolist(),
        "rel_l2": relative_l2(outputs["relevance"], reference),
        "lrpc_sum": outputs["relevance"].reshape(len(x), -1).sum(1).tolist(),
        "lxt_sum": reference.reshape(len(x), -1).sum(1).tolist(),
        "rel_l2_lxt32": relative_l2(lxt_relevance(lxt_view(model, product, torch.float32), x, target)[0], reference),
        "logit": logits.numpy()[np.arange(len(x)), target].tolist(),
    }
    if double:
        try:
            double_map = run_double(explained, {"input": x}, ["relevance"])["relevance"]
        except Exception as e:  # noqa: BLE001  (an op onnx's reference evaluator cannot run)
            result["float64_error"] = f"{type(e).__name__}: {e}"
        else:
            result["rel_l2_float64"] = relative_l2(double_map, reference)
    return result
