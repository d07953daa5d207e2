"""lrpc against Zennit 0.5.1 on the same torch weights: one rule on every layer, Zennit's composites,
and the gradient methods (gradient, smoothgrad on Zennit's own noise draws, integrated gradients).

Each torch model is exported with torch.onnx, compiled by lrpc and run in onnxruntime; Zennit explains
the torch model with the same rule (conventions lined up in benchmarks/zennit_ref.py: Zennit starts
from onehot·y_t with lrpc's own y_t, activations pass relevance, BN merged exactly, global average
pooling as a depthwise conv). Goal: relative L2 error ≤ 1e-5 over the cell's relevance [batch, ...].

A cell that misses the goal in float32 for a measured reason outside lrpc's rules (XFAIL) must show it:
the same export converted to float64, compiled and run in float64, is then compared with Zennit in float64
(benchmarks/zennit_ref.compare_float64), where max-pool near-ties and round-off vanish; that must be within
GOAL_RULES, or the cell fails. Only then is it an expected failure. Differences by design are strict xfails.
`python benchmarks/fidelity.py` regenerates the full table (benchmarks/FIDELITY.md), with Zennit's own
float32-vs-float64 error beside each cell.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("zennit") is None:  # not importorskip: zennit needs the torchvision stub first
    pytest.skip("zennit is not installed (pip install --no-deps zennit==0.5.1)", allow_module_level=True)

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import zennit_ref as Z  # noqa: E402

pytestmark = [pytest.mark.reference, pytest.mark.torch]

GOAL = 1e-5
GOAL_RULES = 1e-6  # lrpc against Zennit, both in float64
FAST = ["digits_cnn", "small_vgg", "tiny_resnet_bn", "autoencoder"]
SLOW = ["vgg16", "resnet18_bn"]  # single rules here; their composite and method cells are in FIDELITY.md
# VGG-16's float64 check (the onnx reference evaluator holds every intermediate) takes 8.5–24 GB per rule and
# was OOM-killed on the 24 GB CI machine: only its cells that meet the goal in float32 are tests; those that
# miss it are measured, with their causes, by `python benchmarks/fidelity.py` (benchmarks/FIDELITY.md).
FLOAT64_TOO_LARGE = {"vgg16"}

_RESIDUAL = (
    "float32 conditioning: {rule} sends input-independent relevance into residual Adds whose sum "
    "z ≈ 0; R/z amplifies round-off (also of the BatchNorm lrpc folds in float32) — Zennit's own "
    "float32 result is as far from its float64 one"
)
_SELU = (
    "onnxruntime's Selu computes α(eˣ−1) (rel. error 2e-4 at x = −1e-4, torch uses expm1) and ε-LRP "
    "divides by the next layer's small pre-activations (min |z| ≈ 2e-4): forward round-off, not the rule"
)
XFAIL = {
    **{("tiny_resnet_bn", rule, b): _RESIDUAL.format(rule=rule) for rule in ("flat", "wsquare") for b in (1, 8)},
    **{
        ("tiny_resnet_bn", "zbox", b): "float32 conditioning: zᴮ bounds [0, 1] on hidden layers make "
        "z = Wx − W⁺l − W⁻h cancel; Zennit's own float32 result is as far from its float64 one"
        for b in (1, 8)
    },
    **{("autoencoder", rule, b): _SELU for rule in ("epsilon", *Z.COMPOSITES) for b in (1, 8)},
    ("small_vgg", "integrated_gradients", 8): "max-pool near-tie at the path point α = 0.1: torch float32 picks "
    "another pool2 winner than float64 (lrpc is 1.5e-7 from Zennit float64, Zennit float32 7.4e-4)",
}
BY_DESIGN = {  # a convention that differs on purpose: a strict xfail, in float32 and float64 alike
    ("autoencoder", "ExcitationBackprop", b): "by design: Zennit's ExcitationBackprop sends relevance through "
    "SELU by its gradient (no Pass rule); lrpc passes it unchanged (identical on ReLU nets)"
    for b in (1, 8)
}
# slow models: VGG-16 on 224x224 and ResNet-18 (measured in benchmarks/FIDELITY.md)
_POOL = (
    "max-pool near-ties: a window or a few (of 802,816 in pool1) pick another winner in onnxruntime's "
    "float32 forward than in torch's, and that unit's relevance lands on a neighbouring pixel"
)
_DEEP = "float32 conditioning: Zennit's own float32 result is as far from its float64 one (deep random net)"
XFAIL.update(
    {
        ("vgg16", rule, b): _POOL + ("" if b == 1 and rule not in ("epsilon", "flat") else "; " + _DEEP)
        for rule in Z.RULES
        for b in (1, 8)
        if (rule, b) != ("gamma", 1)
    }
)
XFAIL.update({("resnet18_bn", rule, b): _DEEP for rule in ("epsilon", "flat", "wsquare", "zbox") for b in (1, 8)})
XFAIL[("resnet18_bn", "gamma", 8)] = _DEEP


# One model at a time in memory (VGG-16 is 0.5 GB per copy); the tests run model by model, rule by rule.
@functools.lru_cache(maxsize=1)
def case_and_export(name):
    torch.set_num_threads(2)
    case = Z.CASES[name]()
    return case, case.onnx_model()


@functools.lru_cache(maxsize=1)
def session(name, rule):
    case, proto = case_and_export(name)
    return Z.lrpc_session(case, Z.METHODS[rule], proto)


def cells(models, kinds, marks=()):
    out = []
    for model in models:
        for rule in [name for name, m in Z.METHODS.items() if m.kind in kinds]:
            for batch in (1, 8):
                if model in FLOAT64_TOO_LARGE and (model, rule, batch) in XFAIL:
                    continue
                why = BY_DESIGN.get((model, rule, batch))
                extra = [pytest.mark.xfail(strict=True, reason=why)] if why else []
                if batch > 1 and Z.METHODS[rule].points > 1:  # a path method: 20 stacked passes; batch 1 covers it
                    extra.append(pytest.mark.slow)
                out.append(pytest.param(model, rule, batch, marks=[*marks, *extra], id=f"{model}-{rule}-b{batch}"))
    return out


@functools.cache
def float64_error(model, rule):
    """lrpc against Zennit, both in float64, on 8 samples (1 of ResNet-18 at 224×224: 5 s, 2 GB)."""
    case, proto = case_and_export(model)
    samples = 1 if model in SLOW else 8
    return Z.compare_float64(case, Z.METHODS[rule], proto, samples, samples)


def check(model, rule, batch):
    r = Z.compare(case_and_export(model)[0], Z.METHODS[rule], session(model, rule), batch)
    why = XFAIL.get((model, rule, batch))
    if why is not None and r["rel"] > GOAL:  # float32 misses: the reason must hold in float64 on both sides
        fine = float64_error(model, rule)
        assert fine <= GOAL_RULES, (
            f"{model} {rule} batch {batch}: float32 {r['rel']:.2e} from Zennit and, both in float64, still "
            f"{fine:.2e} > {GOAL_RULES:g}: a difference between the rules, not '{why}'"
        )
        pytest.xfail(f"{why} (float32 {r['rel']:.1e}; both in float64 {fine:.1e})")
    assert r["rel"] <= GOAL, (
        f"{model} {rule} batch {batch}: relative L2 error {r['rel']:.2e} "
        f"(worst sample {r['worst']:.2e}, max abs {r['max_abs']:.2e})"
    )


@pytest.mark.parametrize("model, rule, batch", cells(FAST, ("rule", "composite", "method")))
def test_matches_zennit(model, rule, batch):
    check(model, rule, batch)


# One pytest-xdist worker for all of them (scripts/test.sh: --dist loadgroup): one 224×224 model in memory
# at a time (VGG-16 is 0.5 GB per copy, Zennit's and onnxruntime's besides).
@pytest.mark.parametrize(
    "model, rule, batch", cells(SLOW, ("rule",), marks=[pytest.mark.slow, pytest.mark.xdist_group("zennit_large")])
)
def test_matches_zennit_large(model, rule, batch):
    check(model, rule, batch)


def test_every_linear_layer_gets_the_rule_in_zennit():
    """The composite hooks every Conv/Linear (the rule), ReLU (Pass) and residual Sum (Norm): only pooling and
    shape ops are left to the plain gradient, as lrpc routes them."""
    case = case_and_export("tiny_resnet_bn")[0]
    view, composite = case.view, Z.METHODS["epsilon"].zennit(case)
    with composite.context(view):
        kinds = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ReLU, Z.zennit.layer.Sum)
        modules = [m for m in view.modules() if isinstance(m, kinds)]
        assert all(any(isinstance(m, kind) for m in modules) for kind in kinds)
        assert all(m._forward_hooks for m in modules)
