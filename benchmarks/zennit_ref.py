"""The Zennit 0.5.1 side of the fidelity harness: torch models, one rule on every layer, lrpc beside it.

Each case is a torch model; it is exported with torch.onnx (TorchScript exporter, opset 17, eval mode,
dynamic batch), compiled by lrpc and run in onnxruntime, and the same torch weights are explained by
Zennit. What is compared, and how the conventions are lined up (docs/design.md §4):

* Start relevance. lrpc starts at the explained logit's value y_t (zeros elsewhere); Zennit starts at
  whatever `grad_output` it is given, usually the one-hot 1. Zennit is given grad_output = onehot(t)·y_t
  with y_t read from the compiled graph itself (its `lrpc.explained` value, added as an output), so
  both maps are compared as they are and both start from the same number: a logit near 0 computed
  with cancellation differs between torch and onnxruntime by more than 1e-5 relative (autoencoder
  sample 0: y_t = -0.0141, 1.5e-5 apart), which is forward round-off, not relevance propagation.
* Target. lrpc's default (`--target max`): each sample's largest logit; t is read from lrpc's own
  outputs and handed to Zennit, so both explain the same class even at a near tie.
* One rule everywhere. Every Conv/ConvTranspose/Linear gets the rule (lrpc's single --rule does the
  same); activations get `Pass` (relevance passes unchanged — lrpc's convention; the plain gradient
  would zero what reaches a dead ReLU, which matters for flat, w² and zᴮ); residual sums get `Norm`
  (Zennit's default: proportional split, stabilizer 1e-6, as lrpc's Add rule with ε = 1e-6);
  BatchNorm is merged into the conv before it by Zennit's `SequentialMergeBatchNorm` (lrpc folds the
  exported BatchNormalization itself). Zennit's merge leaves each BN computing x/√(1+ε_BN) (running
  var 1, its eps 1e-5 kept): a 5e-6 scale per BN that alone moves ResNet relevance by ~2e-5; the
  harness's merge also sets that eps to 0, so the merged model computes the model's function.
  ε = stabilizer = 1e-6 in both.
* zᴮ: lrpc's `zbox:low,high` applies to every linear layer with the same bounds, so Zennit gets
  `ZBox(low, high)` on every linear layer too (not the first only, as in EpsilonGammaBox).
* Average pooling: lrpc canonizes GlobalAveragePool into a depthwise conv with weights 1/k and the
  rule applies to it (docs/design.md §2.2); Zennit's view of the model gets the same depthwise conv.
* Modules, not functions: Zennit hooks only modules, so the autoencoder's functional F.selu become
  nn.SELU modules in Zennit's view (its eval-mode dropouts, identities, are left out).

Zennit imports torchvision (for its ResNet canonizer) at import time; torchvision is not installed
here (no CPU wheel), so `import_zennit` puts a stub module in its place first.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_cases import CASES, Case, GlobalMean  # noqa: E402,F401  (CASES is re-exported for the callers)
from torchvision_stub import stub_torchvision  # noqa: E402

import resnet  # noqa: E402  (models/resnet.py; torch_cases put models/ on sys.path)

EPS = 1e-6
STACK_LIMIT = 20 * 3 * 224 * 224  # input values per stacked evaluation: smoothgrad's 20 samples of one image


def too_big(method, batch: int, input_values: int) -> bool:
    """Whether integrated gradients' or smoothgrad's stacked evaluations (points × batch, in one graph and
    in Zennit's float64 twin) of a model with `input_values` per sample exceed what a 24 GB machine holds."""
    return method.points * batch * input_values > STACK_LIMIT


def import_zennit():
    """Import zennit, with a stub `torchvision.models.resnet` when torchvision is not installed.

    zennit/torchvision.py only needs the two block classes to exist (for isinstance checks in its
    ResNet canonizer, which the harness does not use): empty nn.Module subclasses never match
    (benchmarks/torchvision_stub.py, shared with the timm and LXT harnesses).
    """
    stub_torchvision()
    import zennit
    import zennit.attribution
    import zennit.canonizers
    import zennit.composites
    import zennit.layer
    import zennit.rules
    import zennit.types

    return zennit


zennit = import_zennit()
zr, zc, zt = zennit.rules, zennit.composites, zennit.types


# ------------------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class Method:
    """A table row kind: what lrpc compiles (`lrpc`, a spec of kind `kind`: rule, composite or method)
    and what Zennit computes (`zennit(case)`, a composite; `attributor` for gradient methods)."""

    lrpc: str
    zennit: object  # case -> zennit Composite (None: no hooks)
    kind: str = "rule"  # the lrpc.compile keyword the spec goes to
    attributor: object = None  # a zennit Attributor class with its arguments, for gradient methods

    @property
    def points(self) -> int:
        """Model evaluations per sample: integrated gradients' steps, smoothgrad's samples, else 1."""
        return self.attributor[1].get("n_iter", 1) if self.attributor else 1

    @property
    def starts_at_one(self) -> bool:
        """lrpc's gradient methods start at 1 (Zennit's attributors are given onehot·1 too)."""
        return self.kind == "method"


def _one_rule(make_rule):
    """A composite with `make_rule(case)` on every linear layer; Pass/Norm/merge as in the docstring."""

    def composite(case):
        layer_map = [
            (zt.Activation, zr.Pass()),
            (zennit.layer.Sum, zr.Norm(EPS)),
            (zt.BatchNorm, zr.Pass()),
            (zt.AvgPool, zr.Norm(EPS)),
            (zt.Linear, make_rule(case)),
        ]
        return zc.LayerMapComposite(layer_map, canonizers=canonizers(case))

    return composite


def _builtin(cls, **kw):
    """Zennit's composite `cls` as it ships; the view's GlobalMean conv gets Norm, its rule for average pools."""

    def composite(case):
        extra = {"low": case.low, "high": case.high} if cls is zc.EpsilonGammaBox else {}
        return cls(canonizers=canonizers(case), layer_map=[(GlobalMean, zr.Norm(EPS))], **extra, **kw)

    return composite


SMOOTHGRAD = {"noise_level": 0.1, "n_iter": 20}
METHODS = {
    "epsilon": Method(f"epsilon:eps={EPS:g}", _one_rule(lambda c: zr.Epsilon(EPS))),
    "zplus": Method("zplus", _one_rule(lambda c: zr.ZPlus(EPS))),
    "alpha1beta0": Method("alpha1beta0", _one_rule(lambda c: zr.AlphaBeta(1.0, 0.0, EPS))),
    "alpha2beta1": Method("alpha2beta1", _one_rule(lambda c: zr.AlphaBeta(2.0, 1.0, EPS))),
    "gamma": Method("gamma:gamma=0.25", _one_rule(lambda c: zr.Gamma(0.25, EPS))),
    "flat": Method("flat", _one_rule(lambda c: zr.Flat(EPS))),
    "wsquare": Method("w2", _one_rule(lambda c: zr.WSquare(EPS))),
    "zbox": Method("zbox:low={low:g},high={high:g}", _one_rule(lambda c: zr.ZBox(c.low, c.high, EPS))),
    # Zennit's own composites, as they ship (ε = stabilizer = 1e-6 in both)
    "EpsilonPlus": Method("EpsilonPlus", _builtin(zc.EpsilonPlus), "composite"),
    "EpsilonPlusFlat": Method("EpsilonPlusFlat", _builtin(zc.EpsilonPlusFlat), "composite"),
    "EpsilonAlpha2Beta1": Method("EpsilonAlpha2Beta1", _builtin(zc.EpsilonAlpha2Beta1), "composite"),
    "EpsilonAlpha2Beta1Flat": Method("EpsilonAlpha2Beta1Flat", _builtin(zc.EpsilonAlpha2Beta1Flat), "composite"),
    "EpsilonGammaBox": Method("EpsilonGammaBox:low={low:g},high={high:g}", _builtin(zc.EpsilonGammaBox), "composite"),
    "ExcitationBackprop": Method("ExcitationBackprop", _builtin(zc.ExcitationBackprop), "composite"),
    # gradient methods through Zennit's attributors; smoothgrad's noise is drawn as Zennit draws it
    # (smoothgrad_noise) and fed to lrpc's graph (noise_input=1)
    "gradient": Method("gradient", None, "method", (zennit.attribution.Gradient, {})),
    "smoothgrad": Method(
        f"smoothgrad:samples={SMOOTHGRAD['n_iter']},noise_input=1",
        None,
        "method",
        (zennit.attribution.SmoothGrad, SMOOTHGRAD),
    ),
    "integrated_gradients": Method(
        "integratedgradients:steps=20", None, "method", (zennit.attribution.IntegratedGradients, {"n_iter": 20})
    ),
}
RULES = [name for name, m in METHODS.items() if m.kind == "rule"]
COMPOSITES = [name for name, m in METHODS.items() if m.kind == "composite"]
GRADIENT_METHODS = [name for name, m in METHODS.items() if m.kind == "method"]


# ------------------------------------------------------------------------------------------ canonizers


class _MergeBatchNorm(zennit.canonizers.SequentialMergeBatchNorm):
    """Zennit's SequentialMergeBatchNorm, with the emptied BN made an exact identity (eps 0 while merged)."""

    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        self.bn_eps, batch_norm.eps = batch_norm.eps, 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.bn_eps


class _SumBlock:
    """Zennit canonizer for models/resnet.py blocks: the residual `+` becomes a hookable Sum module.

    Same idea as Zennit's ResNet canonizer for torchvision blocks, written for this repository's
    Basic/Bottleneck (a `shortcut` attribute, `branch_end` naming the branch's last BN).
    """

    @staticmethod
    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        if isinstance(self, resnet.Bottleneck):
            y = self.relu(self.bn2(self.conv2(y)))
        branch = getattr(self, self.branch_end)(getattr(self, "conv" + self.branch_end[-1])(y))
        return self.relu(self.canonizer_sum(torch.stack([self.shortcut(x), branch], dim=-1)))

    @classmethod
    def canonizer(cls):
        def attributes(name, module):
            if isinstance(module, (resnet.Basic, resnet.Bottleneck)):
                return {"forward": cls.forward.__get__(module), "canonizer_sum": zennit.layer.Sum(-1)}
            return None

        return zennit.canonizers.AttributeCanonizer(attributes)


def canonizers(case):
    """Zennit canonizers for a case: BN merge and hookable residual sums (ResNets), else none."""
    return [_MergeBatchNorm(), _SumBlock.canonizer()] if case.resnet else []


# ------------------------------------------------------------------------------------------ running


def lrpc_spec(method: Method, case: Case) -> str:
    return method.lrpc.format(low=case.low, high=case.high)


def lrpc_explained(case: Case, method: Method, proto=None) -> onnx.ModelProto:
    """The case's ONNX export compiled under the method's rule, its explained logits (R₀'s values) an output."""
    import lrpc

    explained = lrpc.compile(
        proto if proto is not None else case.onnx_model(), **{method.kind: lrpc_spec(method, case)}
    )
    scores = explained_scores(explained)
    if scores not in [o.name for o in explained.graph.output]:
        dtype = explained.graph.input[0].type.tensor_type.elem_type  # float64 for compare_float64's file
        explained.graph.output.append(onnx.helper.make_tensor_value_info(scores, dtype, None))
    return explained


def explained_scores(explained: onnx.ModelProto) -> str:
    return {p.key: p.value for p in explained.metadata_props}["lrpc.explained"]


def lrpc_session(case: Case, method: Method, proto=None, explained: onnx.ModelProto | None = None):
    """An onnxruntime session on lrpc_explained(case, method, proto), or on `explained` when given."""
    explained = explained if explained is not None else lrpc_explained(case, method, proto)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(explained.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def smoothgrad_noise(x, noise_level, n_iter):
    """The ε that Zennit 0.5.1's SmoothGrad adds after torch.manual_seed(0), [n_iter, batch, …]: randn·σ with
    σ = noise_level·(max − min) per sample, the last ε zero."""
    xt = torch.from_numpy(np.asarray(x))
    dims = tuple(range(1, xt.ndim))
    std = noise_level * (xt.amax(dims, keepdim=True) - xt.amin(dims, keepdim=True))
    torch.manual_seed(0)
    draws = [torch.randn_like(xt) * std for _ in range(n_iter - 1)] + [torch.zeros_like(xt)]
    return torch.stack(draws).numpy()


def lrpc_relevance(sess, x):
    """(relevance, explained class t, its logit y_t) per sample from the compiled file."""
    names = [o.name for o in sess.get_outputs()]
    feeds = {"input": x}
    if "noise" in [i.name for i in sess.get_inputs()]:
        feeds["noise"] = smoothgrad_noise(x, **SMOOTHGRAD)
    out = dict(zip(names, sess.run(None, feeds)))
    scores = out[sess.get_modelmeta().custom_metadata_map["lrpc.explained"]]
    t = scores.argmax(axis=1)
    return out["relevance"], t, scores[np.arange(len(t)), t]


def zennit_relevance(case: Case, method: Method, x, target, start, dtype=torch.float32):
    """Zennit's relevance at the input for class `target[n]`, starting at grad_output onehot·start[n]."""
    view = case.view if dtype == torch.float32 else copy.deepcopy(case.view).to(dtype)
    xt = torch.from_numpy(np.asarray(x)).to(dtype)
    with torch.no_grad():
        classes = view(xt[:1]).shape[1]
    onehot = torch.nn.functional.one_hot(torch.from_numpy(target), classes).to(dtype)
    grad_output = onehot * torch.from_numpy(np.asarray(start)).to(dtype)[:, None]
    if method.attributor is not None:
        cls, kwargs = method.attributor
        torch.manual_seed(0)  # SmoothGrad's draws: smoothgrad_noise repeats them for lrpc
        with cls(view, composite=method.zennit(case) if method.zennit else None, **kwargs) as attributor:
            return attributor(xt, grad_output)[1].detach().numpy()
    xt.requires_grad_(True)
    with method.zennit(case).context(view) as modified:
        (rel,) = torch.autograd.grad(modified(xt), xt, grad_outputs=grad_output)
    return rel.detach().numpy()


def errors(got, want):
    """(relative L2 error of the whole cell, worst single sample's, max absolute error) of got vs want."""
    got, want = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    tiny = np.finfo(np.float64).tiny
    per_sample = np.linalg.norm(got - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), tiny)
    cell = np.linalg.norm(got - want) / max(np.linalg.norm(want), tiny)
    return float(cell), float(per_sample.max()), float(np.abs(got - want).max())


def compare(case: Case, method: Method, sess, batch: int, floor: bool = False) -> dict:
    """lrpc against Zennit on `batch` inputs: rel (cell), worst (sample), max_abs; with `floor`, also
    Zennit float32 against Zennit float64 (`floor`) and lrpc against Zennit float64 (`vs64`)."""
    x = case.inputs(batch)
    rel_lrpc, target, start = lrpc_relevance(sess, x)
    if method.starts_at_one:
        start = np.ones_like(start)
    rel_zennit = zennit_relevance(case, method, x, target, start)
    out = dict(zip(("rel", "worst", "max_abs"), errors(rel_lrpc, rel_zennit)))
    if floor and method.attributor is not None and method.attributor[0] is zennit.attribution.SmoothGrad:
        out["floor"] = out["vs64"] = None  # float64 draws other noise: no float64 twin of this cell
    elif floor:
        rel64 = zennit_relevance(case, method, x, target, start, torch.float64)
        out["floor"] = errors(rel_zennit, rel64)[0]
        out["vs64"] = errors(rel_lrpc, rel64)[0]
    return out


def compare_float64(case: Case, method: Method, proto: onnx.ModelProto, batch: int, samples: int) -> float:
    """Relative L2 error of lrpc against Zennit with both in float64, on the first `samples` inputs of a `batch`
    cell: the case's export converted to float64 (lrpc.verify.float64.as_double), compiled — so BatchNorm
    folds and every constant lrpc computes are exact in float64 too — and run by benchmarks/double_ops.py,
    against Zennit on the float64 model. What remains is a difference between the rules, not float32's
    round-off, cancellations or max-pool near-ties. No float64 twin for SmoothGrad (Zennit draws its noise in
    the model's dtype)."""
    import double_ops
    from lrpc.verify.float64 import as_double

    if method.attributor is not None and method.attributor[0] is zennit.attribution.SmoothGrad:
        raise ValueError("SmoothGrad has no float64 twin: Zennit draws other noise in float64")
    explained = lrpc_explained(case, method, as_double(proto))
    x = case.inputs(batch)[:samples]
    scores = explained_scores(explained)
    out = double_ops.run_double(explained, {"input": x}, ["relevance", scores])
    target = out[scores].argmax(axis=1)
    start = np.ones(len(x)) if method.starts_at_one else out[scores][np.arange(len(x)), target]
    return errors(out["relevance"], zennit_relevance(case, method, x, target, start, torch.float64))[0]
