"""The modern-convnet zoo (issue 19): timm architectures with self-gated activations, squeeze-excitation
gates and LayerNorms, compiled by lrpc, verified, and compared with LXT 2.1's rules (benchmarks/lxt_ref.py).

    python benchmarks/modern_zoo.py --out benchmarks/MODERN_ZOO.md       # ~10 min on 2 cores
    python benchmarks/modern_zoo.py --models efficientnet_b0 convnext_atto --out /tmp/zoo.md

Needs timm (`bash benchmarks/timm_env.sh`) and lxt (`pip install --no-deps lxt==2.1`) in `.venv`.

Each model: `timm.create_model(name, pretrained=False, **kwargs)` seeded, then `prepare`:
* norm affines drawn (γ ~ U(0.5, 1.5), β ~ N(0, 0.1): BatchNorm, LayerNorm, GroupNorm, GRN) and layer
  scales ~ U(0.5, 1) — timm initialises some of them to 0 or 1e-6, which would make whole residual
  branches carry nothing;
* BatchNorm running statistics from one batch of N(0, 1) input (train-mode forward, momentum None):
  every BN output has mean β and std γ on that batch, so activations neither vanish nor explode;
* each BatchNorm fed directly by a conv merged into it, in float64 and rounded to float32 once, the BN
  left as the exact identity (γ 1, β 0, mean 0, var 1, eps 0). The TorchScript exporter folds eval BNs
  into convs in float32, which moves EfficientNet-B0's logits by 2.6e-6 relative from the torch model
  (measured in float64 on both sides); after the merge the exported weights are the torch weights, so
  lrpc and LXT explain the same function. A BN after something else (MixNet's, after a Concat) stays.
Then export (TorchScript, opset 17, dynamic batch, cached in out/modern_zoo/), and per model:
* `lrpc.compile` with the default composite (EpsilonPlusFlat) and with `--rule epsilon`, each verified
  (`lrpc.verify(..., source=...)`, 2 random samples);
* lrpc `epsilon:eps=1e-9` against LXT (float64 torch) on 4 N(0, 1) samples, `product=gate-constant`
  and `product=half` where the model has SE products: per-sample relative L2 of lrpc's float32 map
  (onnxruntime) and of the same explained graph run in float64 (benchmarks/double_ops.py), LXT's own
  float32 error, and the gate-constant figures again with ε = 1e-12.

The goal (≤ 1e-5) is judged on lrpc's float32 map at ε = 1e-12: LXT computes gradient × input, the
ε → 0 limit on linear layers, and 1e-12 is what `--convention lxt` compiles; the ε = 1e-9 columns show
what ε itself moves (R/(z + ε) differs from the gradient by ε/|z| where |z| is tiny).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lxt_ref  # noqa: E402
from zoo_cells import cell_text, command_line, commit, compile_and_verify, error_text, short, write_report  # noqa: E402
from torchvision_stub import stub_torchvision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "out" / "modern_zoo"
GOAL = 1e-5
GOAL_FAMILIES = ("efficientnet", "mobilenetv3", "convnext", "seresnext", "seresnet")  # the issue's ≤ 1e-5 rows

# (timm name, create_model kwargs, input size): 64×64 unless a model needs more
MODELS = [
    ("efficientnet_b0", {}, 64),
    ("efficientnet_lite0", {}, 64),
    ("tinynet_e", {}, 64),
    ("efficientnetv2_rw_t", {}, 64),
    ("tf_efficientnetv2_b0", {}, 64),
    ("mixnet_s", {}, 64),
    ("mobilenetv3_small_100", {}, 64),
    ("mobilenetv3_large_100", {}, 64),
    ("lcnet_050", {}, 64),
    ("fbnetv3_b", {}, 64),
    ("hardcorenas_a", {}, 64),
    ("mnasnet_small", {}, 64),
    ("semnasnet_075", {}, 64),
    ("mobilenetv4_conv_small", {}, 64),
    ("ghostnet_100", {}, 64),
    ("ghostnetv2_100", {}, 64),
    ("rexnet_100", {}, 64),
    ("regnety_002", {}, 64),
    ("seresnet18", {}, 64),
    ("seresnext26d_32x4d", {}, 64),
    ("seresnext26ts", {}, 64),
    ("resnext26ts", {}, 64),
    ("eca_resnet33ts", {}, 64),
    ("convnext_atto", {}, 64),
    ("convnext_atto", {"conv_mlp": False}, 64),
    ("convnextv2_atto", {}, 64),
]


def key(name: str, kwargs: dict) -> str:
    return name + "".join(f",{k}={v}" for k, v in sorted(kwargs.items()))


# ---------------------------------------------------------------------------------------- models

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def prepare(model: nn.Module, size: int, seed: int = 0, batch: int = 16) -> nn.Module:
    """Draw norm affines and layer scales, set BN statistics from one batch, merge BNs into convs."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, NORMS) or type(module).__name__ == "GlobalResponseNorm":
                if getattr(module, "weight", None) is not None:
                    module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                if getattr(module, "bias", None) is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # ConvNeXt's, MobileNetV4's layer scale
                p.data.copy_(0.5 * torch.rand(p.shape, generator=g) + 0.5)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    x = torch.randn(batch, 3, size, size, generator=g)
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    merge_batchnorm(model, x[:1])
    return model


def merge_batchnorm(model: nn.Module, x: torch.Tensor) -> int:
    """Merge each eval BatchNorm whose input is a conv's output into that conv; returns how many.

    Pairs are found by running `x` with hooks (the BN's input tensor is the conv's output tensor).
    W' = W·s, b' = (b − μ)·s + β with s = γ/√(var + ε), in float64, rounded once; the BN becomes the
    identity exactly (1, 0, 0, 1, ε = 0), so the exporter's own folding changes nothing."""
    produced, keep, pairs = {}, [], []

    def conv_hook(module, args, out):
        produced[id(out)] = module
        keep.append(out)

    def bn_hook(module, args):
        conv = produced.get(id(args[0]))
        if conv is not None:
            pairs.append((conv, module))

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [
        m.register_forward_pre_hook(bn_hook) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    if len({id(c) for c, _ in pairs}) != len(pairs) or len({id(b) for _, b in pairs}) != len(pairs):
        raise RuntimeError("a conv or BatchNorm is used twice; merging would change the model")
    with torch.no_grad():
        for conv, bn in pairs:
            s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(s)
            conv.weight.copy_((conv.weight.double() * s.reshape(-1, 1, 1, 1)).float())
            conv.bias = nn.Parameter(((bias - bn.running_mean.double()) * s + bn.bias.double()).float())
            bn.weight.fill_(1.0), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1.0)
            bn.eps = 0.0
    return len(pairs)


def build(name: str, kwargs: dict, size: int, seed: int = 0) -> tuple[nn.Module, bytes]:
    """(prepared torch model, its ONNX export), the export cached by name, kwargs, size, seed, versions."""
    stub_torchvision()
    import timm

    torch.manual_seed(seed)
    model = prepare(timm.create_model(name, pretrained=False, **kwargs), size, seed)
    tag = json.dumps([key(name, kwargs), size, seed, timm.__version__, torch.__version__, 2])
    stem = key(name, kwargs).replace("=", "-").replace(",", "_")
    path = CACHE / f"{stem}_{size}_{hashlib.sha256(tag.encode()).hexdigest()[:10]}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lxt_ref.export_onnx(model, torch.zeros(1, 3, size, size)))
    return model, path.read_bytes()


# ------------------------------------------------------------------------------------------ cells


def samples(size: int, n: int = 4) -> np.ndarray:
    """The zoo's inputs: n samples of N(0, 1), seeded."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7)).numpy()


def run_model(name: str, kwargs: dict, size: int, samples_n: int = 4) -> dict:
    row = {"model": key(name, kwargs), "size": size}
    t = time.perf_counter()
    try:
        model, source = build(name, kwargs, size)
    except Exception as e:  # noqa: BLE001
        return {**row, "export_error": error_text(e)}
    graph = onnx.load_from_string(source).graph
    row["ops"] = sorted({n.op_type for n in graph.node})
    row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    row["composite"] = compile_and_verify(source)
    row["epsilon"] = compile_and_verify(source, rule="epsilon")
    x = samples(size, samples_n)
    row["lxt"] = {}
    products = ("gate-constant", "half") if lxt_ref.has_products(model) else ("gate-constant",)
    for product in products:
        try:
            cell = lxt_ref.compare(model, source, x, product=product)
            if product == "gate-constant":
                fine = lxt_ref.compare(model, source, x, product=product, eps=1e-12)
                cell["eps1e-12"] = {k: fine[k] for k in ("rel_l2", "rel_l2_float64") if k in fine}
        except Exception as e:  # noqa: BLE001
            cell = {"error": error_text(e)}
        row["lxt"][product] = cell
    row["seconds"] = round(time.perf_counter() - t, 1)
    return row


# ------------------------------------------------------------------------------------------ report


def _worst(values) -> str:
    return f"{max(values):.1e}" if values else "—"


def _lxt_cells(row: dict, product: str) -> list[str]:
    """f32, f64, f32 and f64 at ε = 1e-12, LXT f32, |ΣR/y − 1| (worst sample each)."""
    cell = row.get("lxt", {}).get(product)
    if cell is None:
        return ["—"] * 6
    if "error" in cell:
        return [f"`{short(cell['error'])}`"] + [""] * 5
    ratio = max(abs(a / b - 1) for a, b in zip(cell["lrpc_sum"], cell["logit"]))
    fine = cell.get("eps1e-12", {})
    return [
        _worst(cell["rel_l2"]),
        _worst(cell.get("rel_l2_float64", [])),
        _worst(fine.get("rel_l2", [])),
        _worst(fine.get("rel_l2_float64", [])),
        _worst(cell["rel_l2_lxt32"]),
        f"{ratio:.1e}",
    ]


def _goal(cell: dict) -> str:
    """The goal verdict of a gate-constant cell: lrpc's float32 map at ε = 1e-12 (LXT's ε → 0) within GOAL."""
    fine = cell.get("eps1e-12", {}).get("rel_l2")
    if "error" in cell or not fine:
        return ""
    return "met" if max(fine) <= GOAL else "**missed**"


def render(rows: list[dict], command: str, minutes: float) -> str:
    from importlib.metadata import version

    out = [
        "# Modern convnets: lrpc on timm's families, and against LXT 2.1",
        "",
        f"Generated by `{command}` ({minutes:.1f} min; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads; timm {version('timm')}, lxt {version('lxt')}, torch {torch.__version__}, "
        f"lrpc at {commit()}). What each column is: `benchmarks/modern_zoo.py`'s docstring; how LXT's rules are "
        "applied: `benchmarks/lxt_ref.py`.",
        "",
        "Random weights (`pretrained=False`, seeded), norm affines drawn, BatchNorm statistics from one batch, BNs "
        "merged into their convs before export (TorchScript, opset 17, dynamic batch). 4 samples of N(0, 1) input.",
        "",
        "## Coverage",
        "",
        "| model | input | params (M) | ONNX ops | EpsilonPlusFlat (default) | `--rule epsilon` |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "export_error" in r:
            out.append(f"| {r['model']} | {r['size']} | | export failed: `{r['export_error']}` | | |")
            continue
        out.append(
            f"| {r['model']} | {r['size']} | {r['params_m']} | {', '.join(r['ops'])} | "
            f"{cell_text(r['composite'])} | {cell_text(r['epsilon'])} |"
        )
    out += [
        "",
        "## lrpc against LXT",
        "",
        f"lrpc `--rule epsilon:eps=1e-9` with `--rule-map product=RULE` vs LXT's rules in float64 torch; worst "
        f"relative L2 ‖R_lrpc − R_LXT‖/‖R_LXT‖ over the samples (goal ≤ {GOAL:.0e} on EfficientNet, "
        "MobileNetV3, "
        "ConvNeXt and an SE-ResNet). *f32*: lrpc's file in onnxruntime as deployed; *f64*: the same explained graph "
        "in float64; *ε=1e-12*: the same two recompiled with ε = 1e-12 (what ε itself moves); *LXT f32*: LXT's own "
        "float32 map against its float64 one (what float32 alone costs on this net); *|ΣR/y−1|*: lrpc's relevance "
        "sum against the explained logit (biases absorb some; not a check). `half` only where the model has SE "
        "products (f32, f64, |ΣR/y−1|). The goal column judges gate-constant *f32, ε=1e-12*, the like-for-like "
        "comparison: LXT computes gradient × input (ε → 0), and ε = 1e-12 is what `--convention lxt` compiles; the "
        "ε = 1e-9 columns are the diagnostic of what ε moves. Per-sample figures: the JSON.",
        "",
        "| model | f32 | f64 | f32, ε=1e-12 | f64, ε=1e-12 | LXT f32 | \\|ΣR/y−1\\| | half f32 | half f64 "
        "| half \\|ΣR/y−1\\| | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "lxt" not in r:
            continue
        gc, half = _lxt_cells(r, "gate-constant"), _lxt_cells(r, "half")
        gated = r["model"].startswith(GOAL_FAMILIES)
        goal = _goal(r["lxt"]["gate-constant"]) if gated else ""
        out.append(f"| {r['model']} | {' | '.join(gc)} | {half[0]} | {half[1]} | {half[5]} | {goal} |")
    notes = sorted(
        {
            f"{r['model']}: float64 not run — `{c['float64_error']}`"
            for r in rows
            for c in r.get("lxt", {}).values()
            if "float64_error" in c
        }
    )
    if notes:
        out += ["", "Empty f64 cells:", ""] + [f"- {n}" for n in notes]
    notes_file = Path(__file__).with_name("modern_zoo_notes.md")  # hand-written: what the misses are, measured
    return "\n".join(out + (["", notes_file.read_text().rstrip()] if notes_file.exists() else [])) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the Markdown report (default: print it)")
    parser.add_argument("--json", type=Path, default=CACHE / "modern_zoo.json", help="every figure, per sample")
    parser.add_argument("--from-json", type=Path, help="render the report from an earlier run's JSON")
    parser.add_argument("--models", nargs="+", help="only these: timm names, or keys as in the table (name,kw=v)")
    args = parser.parse_args(argv)
    if lxt_ref.lxt_available():
        parser.error(lxt_ref.lxt_available())
    wanted = set(args.models or [])
    start, rows = time.perf_counter(), []
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        rows, minutes, command = data["rows"], data["minutes"], data["command"]
    for name, kwargs, size in [] if args.from_json else MODELS:
        if wanted and key(name, kwargs) not in wanted and name not in wanted:
            continue
        row = run_model(name, kwargs, size)
        print(f"{row['model']}: {row.get('seconds', '?')} s", file=sys.stderr, flush=True)
        rows.append(row)
    if not args.from_json:
        minutes = (time.perf_counter() - start) / 60
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = command_line("modern_zoo.py", args.models, args.out)
        args.json.write_text(json.dumps({"rows": rows, "minutes": minutes, "command": command}, indent=1))
    write_report(render(rows, command, minutes), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
