"""lrpc against LXT 2.1's rules (AttnLRP / CP-LRP) on the same torch weights: modern-convnet blocks.

LXT's rule functions are applied to the torch modules by benchmarks/lxt_ref.py (identity rule on
SiLU/GELU/HardSwish/…, the SE gate detached for `gate-constant` or the product's gradient halved for
`half`, LayerNorm with its std detached, the plain gradient elsewhere: relevance = x ⊙ x.grad, float64);
lrpc compiles the exported ONNX with `epsilon:eps=1e-9` and the matching `--rule-map product=…`.
Both start at the target logit's value. Models are prepared as benchmarks/modern_zoo.py does (norm
affines drawn, BatchNorm statistics from one batch, BNs merged into their convs before export).

Goal (issue 19): relative L2 ≤ 1e-5 per sample, lrpc's float32 file in onnxruntime against LXT in
float64 (cells that miss it for a measured reason outside the rules are non-strict xfails with that
reason); and, whatever float32 does, the rules themselves must agree: compiled with ε = 1e-12 and run
in float64 (benchmarks/double_ops.py), lrpc is ≤ 1e-6 from LXT. The hand-built blocks need only lxt
and take a second each; the timm variants also need timm (`bash benchmarks/timm_env.sh`) and are slow.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import lxt_ref  # noqa: E402

if lxt_ref.lxt_available():
    pytest.skip(lxt_ref.lxt_available(), allow_module_level=True)

import modern_zoo  # noqa: E402
from torch import nn  # noqa: E402

pytestmark = [pytest.mark.reference, pytest.mark.torch]

GOAL, GOAL_RULES = 1e-5, 1e-6
_F32 = (
    "float32 conditioning: lrpc's float32 file is {lrpc} from LXT float64 and LXT's own float32 map "
    "{lxt} from its float64 one; in float64 (ε = 1e-12) lrpc is {fine} from LXT"
)
XFAIL = {  # measured at 4 samples (worst sample); benchmarks/lxt_layers.py shows them layer by layer
    ("efficientnet_like", "half"): _F32.format(lrpc="1.1e-4", lxt="6.2e-5", fine="5.8e-7")
    + " (half sends relevance through the SE's pre-gate logits s ≈ 0, R/s)",
    ("efficientnet_b0", "gate-constant"): _F32.format(lrpc="5.2e-5", lxt="1.0e-4", fine="7e-8"),
    ("mobilenetv3_small_100", "gate-constant"): "float32 round-off of onnxruntime's optimized graph: one sample "
    "6.7e-5 from LXT, the same file with graph optimizations off 4.4e-6, in float64 (ε = 1e-9) 2.4e-6",
    ("convnext_atto", "gate-constant"): "ε = 1e-9 is not ε → 0: R/(z + ε) moves the gradient by ε/|z| at units "
    "with tiny |z| (fc1, fc2 or conv_dw alone at ε = 1e-9 moves it 2e-6 in float64; at 64×64 fc2's smallest |z| "
    "is 1.6e-8); float64 at ε = 1e-9 is 1.7e-5 from LXT, float32 at ε = 1e-12 4.9e-7",
}


class SqueezeExcite(nn.Module):
    """x · gate(W₂ act(W₁ mean_HW x)); the class name and `gate` are what lxt_ref recognises (as timm's)."""

    def __init__(self, channels, reduced, act, gate):
        super().__init__()
        self.conv_reduce, self.act1 = nn.Conv2d(channels, reduced, 1), act()
        self.conv_expand, self.gate = nn.Conv2d(reduced, channels, 1), gate()

    def forward(self, x):
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class InvertedResidual(nn.Module):
    """MBConv (EfficientNet: SiLU, sigmoid SE) or the MobileNetV3 block (HardSwish, ReLU + HardSigmoid SE)."""

    def __init__(self, channels, act, se_act, gate, expand=4):
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act())
        self.dw = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), act()
        )
        self.se = SqueezeExcite(hidden, max(channels // 2, 4), se_act, gate)
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.project(self.se(self.dw(self.expand(x))))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7, channels-last LayerNorm between permutes, Linear-GELU-Linear, layer scale, + x."""

    def __init__(self, channels):
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.fc1, self.act, self.fc2 = nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(self.norm(self.conv_dw(x).permute(0, 2, 3, 1)))))
        return x + (y * self.gamma).permute(0, 3, 1, 2)


class Net(nn.Module):
    def __init__(self, stem, blocks, channels, head_norm=None):
        super().__init__()
        self.stem, self.blocks = stem, nn.Sequential(*blocks)
        self.head_norm = head_norm or nn.Identity()
        self.fc = nn.Linear(channels, 10)

    def forward(self, x):
        return self.fc(self.head_norm(self.blocks(self.stem(x)).mean((2, 3))))


def efficientnet_like(c=16):
    stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU())
    return Net(stem, [InvertedResidual(c, nn.SiLU, nn.SiLU, nn.Sigmoid) for _ in range(2)], c)


def mobilenetv3_like(c=16):
    stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.Hardswish())
    return Net(stem, [InvertedResidual(c, nn.Hardswish, nn.ReLU, nn.Hardsigmoid) for _ in range(2)], c)


class ChannelsLastNorm(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def convnext_like(c=16):
    stem = nn.Sequential(nn.Conv2d(3, c, 4, stride=4), ChannelsLastNorm(c))
    return Net(stem, [ConvNeXtBlock(c) for _ in range(2)], c, head_norm=nn.LayerNorm(c, eps=1e-6))


BLOCKS = {"efficientnet_like": efficientnet_like, "mobilenetv3_like": mobilenetv3_like, "convnext_like": convnext_like}


def _compare(model, size, product):
    """(ε = 1e-9: the issue's comparison, ε = 1e-12: what is left when ε → 0) for a prepared model."""
    source = lxt_ref.export_onnx(model, torch.zeros(1, 3, size, size))
    x = modern_zoo.samples(size)
    return (
        lxt_ref.compare(model, source, x, product=product),
        lxt_ref.compare(model, source, x, product=product, eps=1e-12),
    )


def _judge(key, result, fine):
    """The rules must agree as ε → 0 (float64, GOAL_RULES); the float32 file must meet GOAL unless XFAIL
    names the measured reason it does not."""
    assert max(fine["rel_l2_float64"]) <= GOAL_RULES, fine
    if key in XFAIL and max(result["rel_l2"]) > GOAL:
        pytest.xfail(XFAIL[key])
    assert max(result["rel_l2"]) <= GOAL, result


@pytest.mark.parametrize("product", ["gate-constant", "half"])
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n == "mobilenetv3_like" else []) for n in BLOCKS]
)  # 15–21 s each; efficientnet_like covers both product rules
def test_blocks_match_lxt(name, product):
    if product == "half" and name == "convnext_like":
        pytest.skip("no product of two activations in a ConvNeXt block")
    torch.manual_seed(0)
    _judge((name, product), *_compare(modern_zoo.prepare(BLOCKS[name](), 16), 16, product))


TIMM = ["efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "seresnext26d_32x4d"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM)
def test_timm_matches_lxt(name):
    """timm models at 32×32, the SE gates held constant (lrpc's default): 2–5 s each on 2 quiet cores."""
    if importlib.util.find_spec("timm") is None:  # not importorskip: timm imports torchvision, stubbed by build
        pytest.skip("timm is not installed (bash benchmarks/timm_env.sh)")
    model, _ = modern_zoo.build(name, {}, 32)
    _judge((name, "gate-constant"), *_compare(model, 32, "gate-constant"))
