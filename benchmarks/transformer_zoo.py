"""The timm transformer zoo (issue 20): vision transformers compiled by lrpc with its attention rules
(composites AttnLRP, the default for a graph with attention, and CPLRP), verified, and — for the
models built from timm's ViT blocks — compared with LXT 2.1's relevance on the same torch model.

    .venv/bin/python benchmarks/transformer_zoo.py --out benchmarks/TRANSFORMER_ZOO.md    # ~15 min, 2 cores
    .venv/bin/python benchmarks/transformer_zoo.py --models vit_tiny_patch16_224 deit_tiny_patch16_224 --out /tmp/z.md

Needs timm and lxt in .venv (`bash benchmarks/timm_env.sh`). No weights are downloaded: every model is
`timm.create_model(name, pretrained=False, **kwargs)` at a small image size, seeded, then `prepare`:
* linear and conv weights N(0, 1/fan_in), their biases 0.1·N(0, 1) (timm's trunc-normal 0.02 would
  leave q·kᵀ ≈ 0, every softmax uniform and the attention rules unexercised);
* norm affines drawn (γ ~ U(0.5, 1.5), β ~ 0.1·N: LayerNorm, GroupNorm, BatchNorm), layer scales
  (`gamma*`, `ls*.gamma`) ~ U(0.5, 1), cls / distillation tokens and position tables 0.5·N, every
  other parameter (relative-position tables, attention biases, ConViT gates, XCiT temperatures)
  perturbed by 0.1·N;
* BatchNorm statistics from one batch of N(0, 1) input and each conv-fed BN merged into its conv
  (benchmarks/modern_zoo.py `merge_batchnorm`), so the export and the torch model are the same function.
Export: TorchScript, opset 17, dynamic batch, static image size (benchmarks/lxt_ref.py `export_onnx`,
input `input`, output `logits`), cached in out/transformer_zoo/. Models whose TorchScript trace of
`F.scaled_dot_product_attention` fails (EVA-02 and the RoPE ViT pass `is_causal` as a tensor) are built with timm's
unfused attention path (`fused_attn = False` on every module that has it).

Columns of the table:
* model        timm name and the create_model kwargs; size: the square image side;
* params       parameters (millions); ONNX ops: node count and distinct op types of the export;
* logit std    std of the logits over 4 N(0, 1) samples (activations neither vanish nor explode);
* compile      `lrpc.compile(source)` (default composite; the composite lrpc chose is in brackets) and
               `lrpc.compile(source, composite="CPLRP")`: seconds, or "no" with the refusal's first
               line verbatim and how many nodes it names;
* verify       `lrpc.verify(explained, source=source, samples=2)` (finite; float64 of a fresh compile
               within 1e-3; conservation reported): pass, or the failing checks; with the worst
               max|R32 − R64|/max|R64| over the samples;
* |ΣR/logit−1| per compile, the worst of 4 N(0, 1) samples: relevance sum over the explained logit
               (onnxruntime float32); biases, LayerNorm β and AttnLRP's softmax rule are not
               conservative, so this is reported, not judged;
* rel-L2 vs LXT  (ViT-block models only: Attention, Mlp, LayerNorm, Block, PatchEmbed of
               timm.models.vision_transformer) ‖R_lrpc − R_LXT‖/‖R_LXT‖, worst of 4 samples, lrpc
               compiled with `--convention lxt` and composite AttnLRP / CPLRP, its explained graph run in
               float64 (benchmarks/double_ops.py; float32 onnxruntime in brackets), against LXT's relevance
               x ⊙ x.grad in float64 from the target logit (lrpc's float32 argmax). The LXT view is a
               float64 deepcopy with LXT's own functions on every module: LayerNorm → layer_norm_forward;
               Mlp → fc2(identity_rule_implicit(act, fc1(x))); Attention → q, k, v from qkv, then
               AttnLRP divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2) or CP-LRP
               stop_gradient(q), stop_gradient(k), then softmax(q·scale·kᵀ)·v by autograd; any other
               module with parameters or a nonlinearity raises (so nothing is left to the plain gradient
               by accident).
Refusals are listed under the table, one per distinct message, with the op and what the exporter wrote.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lxt_ref  # noqa: E402
from modern_zoo import merge_batchnorm  # noqa: E402
from torchvision_stub import stub_torchvision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "out" / "transformer_zoo"
SAMPLES = 4

# (timm name, create_model kwargs, image side, unfused attention)
MODELS = [
    ("vit_tiny_patch16_224", {"img_size": 64}, 64, False),
    ("deit_tiny_patch16_224", {"img_size": 64}, 64, False),
    ("deit_tiny_distilled_patch16_224", {"img_size": 64}, 64, False),
    ("pit_ti_224", {"img_size": 64}, 64, False),
    ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4}, 64, False),
    ("levit_128s", {"img_size": 64}, 64, False),
    ("mixer_s16_224", {"img_size": 64}, 64, False),
    ("cait_xxs24_224", {"img_size": 64, "depth": 2}, 64, False),
    ("eva02_tiny_patch14_224", {"img_size": 56}, 56, True),
    ("beit_base_patch16_224", {"img_size": 64, "depth": 2, "embed_dim": 192, "num_heads": 3}, 64, False),
    ("xcit_nano_12_p16_224", {"img_size": 64}, 64, False),
    ("convit_tiny", {"img_size": 64}, 64, False),
    ("tnt_s_patch16_224", {"img_size": 64, "depth": 2}, 64, False),
    ("vit_relpos_small_patch16_224", {"img_size": 64, "depth": 2}, 64, False),
    ("vit_small_patch16_rope_224", {"img_size": 64, "depth": 2}, 64, True),
    ("coat_lite_tiny", {"img_size": 64}, 64, False),
    ("twins_svt_small", {"img_size": 64}, 64, False),
    ("nest_tiny", {"img_size": 64}, 64, False),
    ("gcvit_xxtiny", {"img_size": 64}, 64, False),
    ("visformer_tiny", {"img_size": 64}, 64, False),
    ("mobilevit_xxs", {}, 64, False),
    ("efficientvit_b0", {}, 64, False),
    ("sequencer2d_s", {"img_size": 64}, 64, False),
    ("efficientformer_l1", {"img_size": 64}, 64, False),
    ("crossvit_tiny_240", {"img_size": [48, 64]}, 64, False),
]


def key(name: str, kwargs: dict) -> str:
    return name + "".join(f",{k}={v}" for k, v in sorted(kwargs.items()))


# ---------------------------------------------------------------------------------------- models

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
TOKENS = ("cls_token", "dist_token", "pos_embed", "reg_token")


def prepare(model: nn.Module, size: int, seed: int = 0, batch: int = 16) -> nn.Module:
    """Seeded weights that exercise the rules (see the module docstring); BN statistics, BN merge."""
    g = torch.Generator().manual_seed(seed + 1)
    rnd = lambda p: torch.randn(p.shape, generator=g, dtype=p.dtype)  # noqa: E731
    done = set()
    with torch.no_grad():
        for mname, module in sorted(model.named_modules(), key=lambda kv: kv[0]):
            for pname, p in sorted(module.named_parameters(recurse=False)):
                if id(p) in done:
                    continue
                done.add(id(p))
                full = f"{mname}.{pname}"
                if isinstance(module, NORMS) or type(module).__name__ in ("LayerNorm2d", "GlobalResponseNorm"):
                    p.copy_(torch.rand(p.shape, generator=g) + 0.5 if pname == "weight" else 0.1 * rnd(p))
                elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and pname == "weight":
                    p.copy_(rnd(p) / math.sqrt(p[0].numel()))
                elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and pname == "bias":
                    p.copy_(0.1 * rnd(p))
                elif "gamma" in pname or re.search(r"(^|\.)ls\d?\.", full):
                    p.copy_(0.5 * torch.rand(p.shape, generator=g) + 0.5)
                elif pname in TOKENS:
                    p.copy_(0.5 * rnd(p))
                else:
                    p.add_(0.1 * rnd(p))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    x = torch.randn(batch, 3, size, size, generator=g)
    if bns:
        model.train()
        with torch.no_grad():
            model(x)
    model.eval()
    if bns:
        merge_batchnorm(model, x[:1])
    return model


def build(name: str, kwargs: dict, size: int, unfused: bool, seed: int = 0) -> tuple[nn.Module, bytes]:
    """(prepared torch model, its ONNX export), the export cached by name, kwargs, size, seed, versions."""
    stub_torchvision()
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs)
    if unfused:
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
    model = prepare(model, size, seed)
    tag = json.dumps([key(name, kwargs), size, seed, unfused, timm.__version__, torch.__version__, 1])
    path = CACHE / f"{name}_{size}_{hashlib.sha256(tag.encode()).hexdigest()[:10]}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lxt_ref.export_onnx(model, torch.zeros(1, 3, size, size)))
    return model, path.read_bytes()


def samples(size: int, n: int = SAMPLES) -> np.ndarray:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7)).numpy()


# ---------------------------------------------------------------------------------------- LXT view


class NotViT(Exception):
    pass


def _lxt_attention(mode, divide_gradient, stop_gradient):
    def forward(self, x, attn_mask=None, is_causal=False):
        B, N, C = x.shape
        if (
            getattr(self, "gate", None) is not None
            or not isinstance(self.q_norm, nn.Identity)
            or not isinstance(self.norm, nn.Identity)
        ):
            raise NotViT("Attention with a gate, q/k norm or inner norm")
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if mode == "attnlrp":
            q, k, v = divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2)
        else:
            q, k = stop_gradient(q), stop_gradient(k)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj(x)

    return forward


def _lxt_mlp(identity_rule_implicit):
    def forward(self, x):
        if not isinstance(self.norm, nn.Identity):
            raise NotViT("Mlp with an inner norm")
        return self.fc2(identity_rule_implicit(self.act, self.fc1(x)))

    return forward


def lxt_view(model: nn.Module, mode: str, dtype=torch.float64) -> nn.Module:
    """An eval deepcopy (float64 by default) of a timm ViT-block model with LXT's rules (AttnLRP or CP-LRP)."""
    from timm.layers import Mlp, PatchEmbed
    from timm.models import vision_transformer as vt

    rules, patches = lxt_ref.import_lxt()
    view = copy.deepcopy(model).to(dtype).eval()
    plain = (
        nn.Linear,
        nn.Conv2d,
        nn.Identity,
        nn.Dropout,
        nn.Sequential,
        nn.ModuleList,
        vt.Block,
        PatchEmbed,
        vt.LayerScale if hasattr(vt, "LayerScale") else nn.Identity,
    )
    for name, module in view.named_modules():
        if module is view:
            continue
        if isinstance(module, vt.Attention):
            module.forward = types.MethodType(_lxt_attention(mode, rules.divide_gradient, rules.stop_gradient), module)
        elif isinstance(module, Mlp):
            module.forward = types.MethodType(_lxt_mlp(rules.identity_rule_implicit), module)
        elif isinstance(module, nn.LayerNorm):
            module.forward = types.MethodType(patches.layer_norm_forward, module)
        elif isinstance(module, nn.GELU) and name.endswith(".act"):
            pass  # inside an Mlp, covered by its identity rule
        elif type(module).__name__ == "DropPath" or isinstance(module, plain):
            pass
        else:
            raise NotViT(f"{name}: {type(module).__name__}")
    return view


def lxt_relevance(view: nn.Module, x: np.ndarray, target) -> tuple[np.ndarray, np.ndarray]:
    xt = torch.as_tensor(x, dtype=torch.float64).clone().requires_grad_(True)
    logits = view(xt)
    logits.gather(1, torch.as_tensor(target).reshape(-1, 1)).sum().backward()
    return (xt * xt.grad).detach().numpy(), logits.detach().numpy()


# ---------------------------------------------------------------------------------------- cells


def _error(e: Exception) -> dict:
    text = str(e)
    first = text.splitlines()[0] if text else ""
    m = re.match(r"(\d+) nodes? cannot", first)
    return {"compiled": False, "error": f"{type(e).__name__}: {first}", "nodes": int(m.group(1)) if m else None}


def _run(proto: onnx.ModelProto, x: np.ndarray) -> dict:
    import onnxruntime as ort

    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"input": x})))


def compile_cell(source: bytes, x: np.ndarray, **options) -> dict:
    import lrpc

    t = time.perf_counter()
    try:
        explained = lrpc.compile(source, **options)
    except Exception as e:  # noqa: BLE001  (a refusal is a table cell)
        return _error(e)
    cell = {
        "compiled": True,
        "seconds": round(time.perf_counter() - t, 2),
        "rule": {p.key: p.value for p in explained.metadata_props}.get("lrpc.rule"),
    }
    try:
        report = lrpc.verify(explained, source=source, samples=2)
        failed = [f"{c.name} ({c.status}: {c.detail})" for c in report.checks if c.status in ("fail", "skipped")]
        cell["verify"] = "pass" if report.passed else "FAIL " + "; ".join(failed)
        errs = [r["error"] for r in report.rows if r["error"] is not None]
        cell["verify_err"] = max(errs) if errs else None
    except Exception as e:  # noqa: BLE001
        cell["verify"] = f"error {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    out = _run(explained, x)
    logits, rel = out["logits"], out["relevance"]
    t = logits.argmax(1)
    chosen = logits[np.arange(len(x)), t]
    cell["conservation"] = float(np.max(np.abs(rel.reshape(len(x), -1).sum(1) / chosen - 1)))
    cell["finite"] = bool(np.isfinite(rel).all())
    return cell


def lxt_cell(model: nn.Module, source: bytes, x: np.ndarray, composite: str, mode: str) -> dict:
    import lrpc
    from double_ops import run_double

    explained = lrpc.compile(source, composite=composite, convention="lxt")
    out = _run(explained, x)
    target = out["logits"].argmax(1)
    ref, logits = lxt_relevance(lxt_view(model, mode), x, target)
    cell = {
        "rel_l2_f32": max(lxt_ref.relative_l2(out["relevance"], ref)),
        "lxt_conservation": float(
            np.max(np.abs(ref.reshape(len(x), -1).sum(1) / logits[np.arange(len(x)), target] - 1))
        ),
    }
    try:
        cell["rel_l2_f64"] = max(
            lxt_ref.relative_l2(run_double(explained, {"input": x}, ["relevance"])["relevance"], ref)
        )
    except Exception as e:  # noqa: BLE001
        cell["f64_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    return cell


def is_vit(model: nn.Module) -> bool:
    try:
        lxt_view(model, "attnlrp")
        return True
    except NotViT:
        return False


def run_model(name: str, kwargs: dict, size: int, unfused: bool) -> dict:
    row = {"model": key(name, kwargs), "size": size, "unfused": unfused}
    t0 = time.perf_counter()
    try:
        model, source = build(name, kwargs, size, unfused)
    except Exception as e:  # noqa: BLE001
        row["export_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return row
    graph = onnx.load_from_string(source).graph
    row["nodes"] = len(graph.node)
    row["ops"] = sorted({n.op_type for n in graph.node})
    row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    x = samples(size)
    with torch.no_grad():
        row["logit_std"] = float(model(torch.from_numpy(x)).std())
    row["default"] = compile_cell(source, x)
    row["cplrp"] = compile_cell(source, x, composite="CPLRP")
    if is_vit(model):
        row["lxt"] = {}
        for composite, mode in (("AttnLRP", "attnlrp"), ("CPLRP", "cplrp")):
            try:
                row["lxt"][composite] = lxt_cell(model, source, x, composite, mode)
            except Exception as e:  # noqa: BLE001
                row["lxt"][composite] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


# ---------------------------------------------------------------------------------------- report


def _g(v, fmt=".1e"):
    return "—" if v is None else format(v, fmt)


def _compile_text(c: dict) -> str:
    if not c.get("compiled"):
        return f"**no** ({c.get('nodes')} nodes): `{c['error'][:160]}`"
    return f"{c['seconds']} s"


def _verify_text(c: dict) -> str:
    if not c.get("compiled"):
        return "—"
    v = c["verify"]
    if v == "pass":
        return f"pass ({_g(c.get('verify_err'))})"
    m = re.search(r"relevance within ([0-9.e+-]+) of float64", v)
    if m:
        return f"**FAIL** float64 {m.group(1)}"
    return "**FAIL** " + v[5:120]


FINDINGS = """## Findings

* **LXT agreement (ViT, DeiT, DeiT-distilled)**: lrpc `--convention lxt` equals LXT to ≤ 9e-8 relative L2 in
  float64 (≤ 9.2e-7 in float32 onnxruntime), for both AttnLRP and CP-LRP. vit_tiny and deit_tiny are the same
  architecture with the same seed here (identical rows). Other ViT-like models (PiT's conv pooling, BEiT's relative
  bias, EVA's RoPE/SwiGLU, …) are not compared: their modules are not all covered by the LXT view.
* **`lrpc verify` passes its float64 check on every compiled model** (max|R32 − R64|/max|R64| ≤ 2.4e-5 under
  AttnLRP and CPLRP, 4.6e-4 for MLP-Mixer under EpsilonPlusFlat; outputs ~1e-6). Until lrpc's AttnLRP/CPLRP
  took ε = 1e-12 for every rule they govern and let constant addends absorb their share (commit "AttnLRP and
  CPLRP: eps 1e-12 …"), 13 of 21 failed (1e-3 … 5.8e-2): a position table's unit relevance was left with x
  and later divided by a near-zero pre-addend value, and ε = 1e-6 at LayerNorm outputs near 0 followed their
  float32 rounding.
* **PiT**: onnx's reference evaluator raised `cannot reshape array of size 9 into shape (1,2,9)` on the
  relevance form's graph at batch 2 (reported "skipped", which verify counts as not passed); the gradient
  form's graph (lrpc/gradient_form.py, since 2026-12-07) it runs, and PiT passes.
* **|ΣR/logit − 1|** is far from 0 everywhere (biases, LayerNorm β, cls/position tables absorb or inject
  relevance; LXT's own ViT figure is 0.89 / 0.54), and explodes on CaiT (18), NesT (63 / 230) and Visformer
  (18 / 76): relevance sums of 20–200× the logit.

## Refusals: what the exporter wrote and what lrpc would need

1. **CP-LRP on attention with no softmax-only factor** (`rule gate-constant, but neither factor of this q·kᵀ is
   a softmax output`): CoaT (factorised attention: Softmax(k)ᵀ·v, then q·(that); 16 nodes) and EfficientViT
   (ReLU linear attention, no Softmax; 8 nodes). AttnLRP compiles both. CaiT's talking heads and ConViT's gated,
   renormalised softmaxes now compile under CPLRP: a factor every input path of which passes a Softmax counts
   as the attention weights. lrpc would need a documented choice of which factor of a linear/factorised
   attention is "the weights" (e.g. the q/k side), or a fall-back to half with a note.
2. **LSTM** (sequencer2d_s; 36 nodes, `no relevance rule for node … (LSTM)`): the exporter writes ONNX `LSTM`
   nodes (bidirectional, over rows and columns). lrpc would need an LSTM rule: unroll the node into per-step
   MatMul + Sigmoid/Tanh + Mul (an ONNX function body) and apply its existing rules — gates held constant
   (signal-take-all, Arras et al. 2017) = gate-constant on σ(·)·tanh(·) products, ε on the linear parts.
3. (twins_svt_small, refused before for a strided Conv with symbolic spatial dims, now compiles: constant
   folding evaluates shape expressions of static dims and repeats with shape inference.)
4. **Not lrpc's**: efficientformer_l1 and crossvit_tiny_240 do not build at 64² in timm (attention biases /
   token counts fixed to the 224 layout), EVA-02 and the RoPE ViT do not trace with fused attention
   (`scaled_dot_product_attention(): argument 'is_causal' must be bool, not Tensor`) and were exported with
   timm's unfused path (they compile and verify).
"""


def markdown(rows: list[dict], header: str) -> str:
    import lrpc

    stub_torchvision()
    import timm

    lines = [
        "# The timm transformer zoo: lrpc's attention rules (AttnLRP, CP-LRP) on vision transformers",
        "",
        f"`benchmarks/transformer_zoo.py` ({header}); lrpc {lrpc.__version__}, timm {timm.__version__}, "
        f"torch {torch.__version__}, LXT 2.1, {platform.machine()}. Random seeded weights (see the script's "
        "docstring for the draw and every column), exports TorchScript opset 17, dynamic batch, static image size.",
        "",
        "    .venv/bin/python benchmarks/transformer_zoo.py --out benchmarks/TRANSFORMER_ZOO.md",
        "",
        "| model | size | params (M) | ONNX nodes / ops | logit std | compile default [composite] "
        "| verify default (max R32−R64) | compile CPLRP | verify CPLRP | \\|ΣR/logit−1\\| default / CPLRP "
        "| rel-L2 vs LXT AttnLRP f64 (f32) | rel-L2 vs LXT CP-LRP f64 (f32) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    refusals: dict[str, list[str]] = {}
    for r in rows:
        if "export_error" in r:
            lines.append(
                f"| {r['model']} | {r['size']} | — | export failed: `{r['export_error'][:160]}` "
                "| — | — | — | — | — | — | — | — |"
            )
            refusals.setdefault("export: " + r["export_error"], []).append(r["model"])
            continue
        d, c = r["default"], r["cplrp"]
        for cell in (d, c):
            if not cell.get("compiled"):
                refusals.setdefault(cell["error"], []).append(r["model"])
        comp = f"{_compile_text(d)}" + (f" [{d['rule']}]" if d.get("compiled") else "")
        cons = f"{_g(d.get('conservation'), '.2g')} / {_g(c.get('conservation'), '.2g')}"
        lx = r.get("lxt", {})

        def lxt_text(k):
            e = lx.get(k)
            if e is None:
                return "—"
            if "error" in e:
                return e["error"][:80]
            return f"{_g(e.get('rel_l2_f64'))} ({_g(e['rel_l2_f32'])})"

        lines.append(
            f"| {r['model']} | {r['size']} | {r['params_m']} | {r['nodes']} / {len(r['ops'])} "
            f"| {r['logit_std']:.2g} | {comp} | {_verify_text(d)} | {_compile_text(c)} | {_verify_text(c)} "
            f"| {cons} | {lxt_text('AttnLRP')} | {lxt_text('CPLRP')} |"
        )
    lines += ["", "## Refusals (distinct first lines)", ""]
    if not refusals:
        lines.append("none")
    for msg, models in refusals.items():
        lines.append(f"* {', '.join(sorted(set(models)))}: `{msg[:400]}`")
    lines += ["", FINDINGS]
    lines += ["", "## ONNX op types per model", ""]
    for r in rows:
        if "ops" in r:
            lines.append(f"* {r['model']}: {' '.join(r['ops'])}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", help="timm names (default: all of MODELS)")
    p.add_argument("--out", type=Path, help="markdown table to write (JSON rows beside it, .json)")
    p.add_argument("--merge", action="store_true", help="keep the other rows of --out's JSON (rerun a few models)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    todo = [m for m in MODELS if not args.models or m[0] in args.models]
    rows = []
    for name, kwargs, size, unfused in todo:
        row = run_model(name, kwargs, size, unfused)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.merge and args.out and args.out.with_suffix(".json").exists():
        new = {r["model"]: r for r in rows}
        old = {r["model"]: r for r in json.loads(args.out.with_suffix(".json").read_text())}
        old.update(new)
        rows = [old[key(n, k)] for n, k, _, _ in MODELS if key(n, k) in old]
    import os

    header = f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    text = markdown(rows, header)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
