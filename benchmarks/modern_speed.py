"""Explained ÷ plain forward for modern convnets: timm EfficientNet-B0, ConvNeXt-atto and MobileNetV2 at 224×224.

    python benchmarks/modern_speed.py --out benchmarks/SPEED_MODERN.md     (needs timm: benchmarks/timm_env.sh)

Each model is built with seeded random weights (pretrained=False), its BatchNorm statistics set from one
batch of random input, exported with torch.onnx (TorchScript, opset 17, dynamic batch), and measured by
`lrpc bench` (lrpc.bench: interleaved runs, warm-up excluded, medians; 2 threads) under ε and the default
composite EpsilonPlusFlat at batch 1, 8 and 16 (both sessions' idle threads sleep between the
interleaved runs). Peak RSS at batch 16: explained ÷ forward, and explained ÷ the graph's memory floor
(lrpc.memory_floor). Target (issue 19): ε ≤ 2.5×.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import torchvision_stub  # noqa: E402

MODELS = ("efficientnet_b0", "convnext_atto", "mobilenetv2_100")
BATCHES = (1, 8, 16)
OPTIONS = {"ε": {"rule": "epsilon"}, "EpsilonPlusFlat": {"composite": "EpsilonPlusFlat"}}


def export(name: str, out: Path, size: int = 224) -> Path:
    torchvision_stub.stub_torchvision()
    import timm

    path = out / f"{name}_{size}.onnx"
    if path.exists():
        return path
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # the statistics of exactly this batch
        model(torch.randn(8, 3, size, size))
    torch.onnx.export(
        model.eval(),
        torch.randn(1, 3, size, size),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/SPEED_MODERN.md")
    parser.add_argument("--work", default="out/speed_modern")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    from lrpc.bench import bench

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Speed: modern convnets (explained ÷ plain forward, onnxruntime CPU, 2 threads)",
        "",
        f"Measured {datetime.date.today()} by `python benchmarks/modern_speed.py` (see its docstring); "
        "ratios are interleaved medians within one cell, so machine load hits both sides alike, but the "
        "spreads show how loaded the machine was. Target: ε ≤ 2.5×.",
        "",
        "| model | rule | batch | forward ms | explained ms | ratio | peak RSS explained ÷ forward (b16) "
        "| explained peak ÷ memory floor (b16) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        path = export(name, work)
        for label, options in OPTIONS.items():
            result = bench(str(path), batches=list(BATCHES), threads=2, repeats=args.repeats, **options)
            rss, floor = result.peak_rss_mb, result.memory_floor
            memory = f"{rss['explained'] / rss['forward']:.2f}×" if rss["explained"] and rss["forward"] else "—"
            over = floor and floor["explained_peak_over_floor"]
            to_floor = f"{over:.2f}× ({floor['floor_mb']:.0f} MB)" if over else "—"
            for row in result.batches:
                last = row.batch == max(BATCHES)
                lines.append(
                    f"| {name} | {label} | {row.batch} | "
                    f"{row.forward.median_ms:.1f} ±{row.forward.spread:.0%} "
                    f"| {row.explained.median_ms:.1f} ±{row.explained.spread:.0%} | {row.ratio:.2f}× | "
                    f"{memory if last else ''} | {to_floor if last else ''} |"
                )
            print(*lines[-len(BATCHES) :], sep="\n", flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
