"""torch.onnx exports of modern blocks: the gradient of the new ops against torch autograd, and LRP on
transformer-shaped norms ([batch, tokens, hidden], dynamic tokens) against x ⊙ ∇ of the same block with
the denominators detached — the gradient form of the rules (LRP-0 with the norm's σ and the gates held
fixed equals input × the gradient of that modified block; DESIGN of AttnLRP, LXT)."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest

import lrpc

torch = pytest.importorskip("torch")
nn = torch.nn
pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]


def _export(module, x, opset=17, dynamic=None):
    f = io.BytesIO()
    torch.onnx.export(
        module.eval(),
        x,
        f,
        opset_version=opset,
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes=dynamic or {"input": {0: "batch"}},
    )
    return f.getvalue()


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString()).run(None, feeds)


ACTIVATIONS = {
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "mish": nn.Mish,
    "silu": nn.SiLU,
    "softsign": nn.Softsign,
}
NORMS = {
    "layernorm": lambda: nn.LayerNorm(6),
    "instancenorm": lambda: nn.InstanceNorm2d(4, affine=True),
    "groupnorm": lambda: nn.GroupNorm(2, 4),
}


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name", [*ACTIVATIONS, *NORMS])
def test_gradient_of_new_ops_matches_autograd(name, opset):
    """--method gradient through each op (the ONNX op, or the pattern torch writes at this opset), with a
    random weighting of the outputs (a plain sum has a zero gradient through a norm)."""
    torch.manual_seed(0)
    layer = {**ACTIVATIONS, **NORMS}[name]()
    for p in layer.parameters():
        p.data = torch.randn_like(p)
    x = 2 * torch.randn(2, 4, 5, 6)
    weights = torch.randn(4, 5, 6)
    model = lrpc.compile(_export(layer, x, opset), method="gradient", target="mask")
    mask = np.broadcast_to(weights.numpy(), x.shape).astype(np.float32)
    got = _run(model, {"input": x.numpy(), "mask": mask})[1]
    xx = x.double().requires_grad_()
    (layer.double()(xx) * weights.double()).sum().backward()
    expected = xx.grad.numpy()
    assert np.linalg.norm(got - expected) <= 3e-6 * np.linalg.norm(expected)


class _Block(nn.Module):
    """A pre-norm transformer MLP block: x + W₂ act(W₁ norm(x)), then a head on the first token."""

    def __init__(self, norm, act, hidden=8, glu=False):
        super().__init__()
        self.norm, self.act, self.glu = norm, act, glu
        self.up, self.gate = nn.Linear(hidden, 16), nn.Linear(hidden, 16)
        self.down, self.head = nn.Linear(16, hidden), nn.Linear(hidden, 3)

    def forward(self, x, detach=False):
        h = self.norm(x, detach)
        a = self.act(self.gate(h), detach) * self.up(h) if self.glu else self.act(self.up(h), detach)
        return self.head((x + self.down(a))[:, 0])


class _LayerNorm(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.ln = nn.LayerNorm(hidden)
        self.ln.weight.data, self.ln.bias.data = torch.rand(hidden) + 0.5, 0.3 * torch.randn(hidden)

    def forward(self, x, detach=False):
        if not detach:
            return self.ln(x)
        d = x - x.mean(-1, keepdim=True)
        return d / torch.sqrt(d.pow(2).mean(-1, keepdim=True) + self.ln.eps).detach() * self.ln.weight + self.ln.bias


class _RMSNorm(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(hidden) + 0.5)

    def forward(self, x, detach=False):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.weight * (x * (r.detach() if detach else r))


class _GELU(nn.Module):
    def forward(self, x, detach=False):
        gate = 0.5 * (1 + torch.erf(x / 2**0.5))
        return x * (gate.detach() if detach else gate)


class _SiLU(nn.Module):
    def forward(self, x, detach=False):
        return x * (torch.sigmoid(x).detach() if detach else torch.sigmoid(x))


class _Half(torch.autograd.Function):
    """Identity forward, half the gradient back: the uniform rule of a product in gradient form."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g / 2


class _HalfGLU(_Block):
    def forward(self, x, detach=False):
        h = self.norm(x, detach)
        g, u = self.act(self.gate(h), detach), self.up(h)
        a = _Half.apply(g) * _Half.apply(u) if detach else g * u
        return self.head((x + self.down(a))[:, 0])


BLOCKS = {
    "layernorm_gelu": lambda: _Block(_LayerNorm(), _GELU()),
    "rmsnorm_swiglu": lambda: _HalfGLU(_RMSNorm(), _SiLU(), glu=True),
}


@pytest.mark.parametrize("options", [dict(rule="epsilon:eps=1e-9"), dict(composite="AttnLRP")])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_transformer_norms_match_the_gradient_form(name, options):
    """Dynamic token count; LRP-0 (ε = 1e-9, built in relevance form; AttnLRP, ε = 1e-12, built in gradient
    form: lrpc/gradient_form.py) equals x ⊙ ∇ of the block with σ, rsqrt and the SiLU gate detached and, for
    the gate·up product under `half`, half the gradient into each factor."""
    torch.manual_seed(1)
    block = BLOCKS[name]().eval()
    x = torch.randn(2, 5, 8)
    model = lrpc.compile(_export(block, x, dynamic={"input": {0: "batch", 1: "tokens"}}), **options)
    for tokens in (5, 7):
        xt = torch.randn(3, tokens, 8)
        y, got = _run(model, {"input": xt.numpy()})
        xx = xt.double().requires_grad_()
        out = block.double()(xx, detach=True)
        out[torch.arange(3), out.argmax(1)].sum().backward()
        block.float()
        expected = (xx * xx.grad).detach().numpy()
        err = np.linalg.norm((got - expected).reshape(3, -1), axis=1) / np.linalg.norm(expected.reshape(3, -1), axis=1)
        assert np.all(err <= 1e-5), err
