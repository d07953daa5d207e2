"""Static int8 QDQ models of real architectures through lrpc (issue 19, item 5): does each compile, does the
explained file compute the deployed quantized model's outputs, does `lrpc verify` pass, and how far does
quantization move the relevance from lrpc's relevance of the float model?

    python benchmarks/quantized_zoo.py --out benchmarks/QUANTIZED_ZOO.md        # ~3.5 min on 2 cores
    python benchmarks/quantized_zoo.py --models resnet18 --out /tmp/qzoo.md
    python benchmarks/quantized_zoo.py --copy-cost mobilenetv2_100              # the copies' cost (copy_cost)

Needs timm in `.venv` (`bash benchmarks/timm_env.sh`). Each model is built as benchmarks/modern_zoo.py
builds it (seeded random weights, `pretrained=False`; norm affines drawn, BatchNorm statistics from one
batch, BNs merged into their convs; TorchScript export at opset 17, dynamic batch; 64×64 input) and then
quantized by onnxruntime's `quantize_static` into QDQ format twice, with per-channel and with per-tensor
weights. Both: MinMax calibration on CALIBRATION_BATCHES seeded batches of N(0, 1) input, onnxruntime's
defaults otherwise (activations int8 asymmetric, weights int8 symmetric, the op types it quantizes by
default), no `quant_pre_process`. Per quantized file and per option (the default composite,
EpsilonPlusFlat, and `--rule epsilon`), on SAMPLES seeded N(0, 1) inputs:

* compiled: `lrpc.compile` succeeded, or its error message;
* Δ outputs: max |explained file's logits − the quantized model's own logits|, both in onnxruntime;
* verify: `lrpc.verify(explained, source=quantized, samples=2)`'s verdict (a check that could not run
  is shown as NOT RUN: never a pass);
* vs float: per-sample relative L2 ‖R_q − R_f‖ / ‖R_f‖ between the quantized file's relevance and lrpc's
  relevance of the float model under the same option (informative: activation and weight rounding move
  it), median and worst, and on how many samples the two explain the same class;
* ΣR / y: the quantized file's relevance sum over the explained logit, min and max over the samples.

And per model one QuantFormat.QOperator file (per-tensor weights): the line `lrpc.compile` refuses it with.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from modern_zoo import build, samples  # noqa: E402
from zoo_cells import command_line, commit, error_text, short, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "out" / "quantized_zoo"
SIZE, SAMPLES, CALIBRATION_BATCHES, CALIBRATION_BATCH = 64, 4, 4, 4
MODELS = ["resnet18", "seresnet18", "mobilenetv2_100", "mobilenetv3_small_100", "efficientnet_b0", "regnety_002"]
OPTIONS = {"EpsilonPlusFlat (default)": {}, "--rule epsilon": {"rule": "epsilon"}}


# ------------------------------------------------------------------------------------ quantization


def calibration_batches(size: int, n: int = CALIBRATION_BATCHES, batch: int = CALIBRATION_BATCH) -> list:
    """The calibration feeds: n batches of N(0, 1) input, seeded (seeds 100, 101, …; the samples use 7)."""
    return [
        {"input": torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(100 + i)).numpy()}
        for i in range(n)
    ]


def quantize(source: bytes, size: int, per_channel: bool, qdq: bool = True) -> bytes:
    """`source` quantized by onnxruntime's quantize_static (QDQ or QOperator), calibrated on the seeded batches."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration_batches(size))

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as folder:
        float_path, quantized_path = Path(folder, "float.onnx"), Path(folder, "quantized.onnx")
        float_path.write_bytes(source)
        quantize_static(
            str(float_path),
            str(quantized_path),
            Batches(),
            quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
            per_channel=per_channel,
        )
        return quantized_path.read_bytes()


# ------------------------------------------------------------------------------------------ cells


def run_ort(model: bytes | onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})))


def rel_l2(a: np.ndarray, b: np.ndarray) -> list[float]:
    """‖a − b‖ / ‖b‖ per sample, in float64."""
    a, b = (v.reshape(len(v), -1).astype(np.float64) for v in (a, b))
    return (np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).tolist()


def verdict(explained: onnx.ModelProto, source: bytes) -> str:
    """`lrpc verify --source`'s verdict line, with the checks that did not pass (NOT RUN stays NOT RUN)."""
    import lrpc
    from lrpc.verify.report import LABELS

    try:
        report = lrpc.verify(explained, source=source, samples=2)
    except Exception as e:  # noqa: BLE001  (any failure is a table cell)
        return f"verify raised {error_text(e)}"
    if report.passed:
        return "pass"
    shown = [f"{LABELS[c.status]} {c.name} ({c.detail})" for c in report.checks if c.status not in ("pass", "info")]
    return report.verdict().split(":")[0] + ": " + "; ".join(shown)


def compile_cell(quantized: bytes, options: dict, x: np.ndarray, float_relevance: np.ndarray | None) -> dict:
    """Compile, Δ outputs against the quantized model, verify, relevance against the float model's, ΣR / y."""
    import lrpc

    t = time.perf_counter()
    try:
        explained = lrpc.compile(quantized, **options)
    except Exception as e:  # noqa: BLE001
        return {"compiled": False, "error": error_text(e)}
    cell = {"compiled": True, "seconds": round(time.perf_counter() - t, 2)}
    deployed, got = run_ort(quantized, x)["logits"], run_ort(explained, x)
    cell["max_abs_output_diff"] = float(np.abs(got["logits"].astype(np.float64) - deployed).max())
    logit = deployed[np.arange(len(x)), deployed.argmax(1)].astype(np.float64)
    cell["sum_over_logit"] = (got["relevance"].reshape(len(x), -1).astype(np.float64).sum(1) / logit).tolist()
    cell["class"] = deployed.argmax(1).tolist()
    if float_relevance is not None:
        cell["rel_l2_vs_float"] = rel_l2(got["relevance"], float_relevance)
    cell["verify"] = verdict(explained, quantized)
    return cell


def float_cells(source: bytes, x: np.ndarray) -> dict:
    """Per option: lrpc's relevance of the float model and the class it explains (None where it fails)."""
    import lrpc

    out = {}
    for label, options in OPTIONS.items():
        try:
            got = run_ort(lrpc.compile(source, **options), x)
            out[label] = {"relevance": got["relevance"], "class": got["logits"].argmax(1).tolist()}
        except Exception as e:  # noqa: BLE001
            out[label] = {"error": error_text(e)}
    return out


def qoperator_refusal(source: bytes, size: int) -> str:
    """The first line lrpc.compile refuses a QOperator file with (or what else happened)."""
    import lrpc

    try:
        qop = quantize(source, size, per_channel=False, qdq=False)
    except Exception as e:  # noqa: BLE001
        return f"quantization failed: {error_text(e)}"
    ops = sorted({n.op_type for n in onnx.load_from_string(qop).graph.node if n.op_type.startswith(("QLinear", "Q"))})
    try:
        lrpc.compile(qop)
    except Exception as e:  # noqa: BLE001
        return f"refused ({', '.join(ops)} in the file): {error_text(e)}"
    return f"COMPILED (not refused; {', '.join(ops)} in the file)"


def run_model(name: str, size: int = SIZE) -> dict:
    row = {"model": name, "size": size}
    t = time.perf_counter()
    try:
        _, source = build(name, {}, size)
    except Exception as e:  # noqa: BLE001
        return {**row, "export_error": error_text(e)}
    x = samples(size, SAMPLES)
    floats = float_cells(source, x)
    row["quantized"] = {}
    for per_channel in (True, False):
        mode = "per-channel" if per_channel else "per-tensor"
        try:
            quantized = quantize(source, size, per_channel)
        except Exception as e:  # noqa: BLE001
            row["quantized"][mode] = {"quantization_error": error_text(e)}
            continue
        ops = [n.op_type for n in onnx.load_from_string(quantized).graph.node]
        cells = {"quantizers": ops.count("QuantizeLinear"), "dequantizers": ops.count("DequantizeLinear")}
        for label, options in OPTIONS.items():
            f = floats[label]
            cell = compile_cell(quantized, options, x, f.get("relevance"))
            if "class" in cell and "class" in f:
                cell["same_class"] = int(sum(a == b for a, b in zip(cell["class"], f["class"])))
            cells[label] = cell
        row["quantized"][mode] = cells
    row["float_errors"] = {k: v["error"] for k, v in floats.items() if "error" in v}
    row["qoperator"] = qoperator_refusal(source, size)
    row["seconds"] = round(time.perf_counter() - t, 1)
    return row


# ------------------------------------------------------------------------------------------ speed


def copy_cost(name: str, batch: int = 16, repeats: int = 30, threads: int = 1) -> dict:
    """What the explained file's own copies of the quantized layers cost (passes/quantized.py `fusable_forward`):
    median wall time of the quantized model, of its explained file (default composite), and of the explained
    file compiled with fusable_forward switched off (the rules read the forward's values, so onnxruntime
    fuses none of its units), run interleaved on one batch after 3 uncounted runs each."""
    import onnxruntime as ort

    import lrpc
    import lrpc.emit

    _, source = build(name, {}, SIZE)
    quantized = quantize(source, SIZE, per_channel=True)
    kept = lrpc.emit.fusable_forward
    explained = lrpc.compile(quantized)
    lrpc.emit.fusable_forward = lambda graph, b: 0
    try:
        unfused = lrpc.compile(quantized)
    finally:
        lrpc.emit.fusable_forward = kept
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    models = {"forward": quantized, "explained": explained, "explained, no copies": unfused}
    sessions = {
        k: ort.InferenceSession(m if isinstance(m, bytes) else m.SerializeToString(), options)
        for k, m in models.items()
    }
    x = {"input": samples(SIZE, batch)}
    times = {k: [] for k in sessions}
    for i in range(repeats + 3):
        for k, session in sessions.items():
            t = time.perf_counter()
            session.run(None, x)
            if i >= 3:
                times[k].append(time.perf_counter() - t)
    ms = {k: float(np.median(v) * 1e3) for k, v in times.items()}
    return {
        "model": name,
        "batch": batch,
        "threads": threads,
        "ms": ms,
        "ratio": {k: v / ms["forward"] for k, v in ms.items()},
    }


# ------------------------------------------------------------------------------------------ report


def _span(values: list[float], fmt: str = ".1e") -> str:
    return f"{min(values):{fmt}} … {max(values):{fmt}}"


def _cells(cell: dict) -> list[str]:
    """compiled, Δ outputs, verify, relative L2 vs float (median / worst, same class), ΣR / y."""
    if not cell["compiled"]:
        return [f"no: `{short(cell['error'])}`", "", "", "", ""]
    versus = cell.get("rel_l2_vs_float")
    against = (
        f"{np.median(versus):.2f} / {max(versus):.2f} ({cell.get('same_class', '?')}/{len(versus)})" if versus else "—"
    )
    return [
        "yes",
        f"{cell['max_abs_output_diff']:.1e}",
        short(cell["verify"], 200).replace("|", "\\|"),
        against,
        _span(cell["sum_over_logit"], ".3f"),
    ]


def render(rows: list[dict], command: str, minutes: float) -> str:
    from importlib.metadata import version

    import onnxruntime

    out = [
        "# Quantized models: static int8 QDQ timm networks through lrpc",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} ({minutes:.1f} min; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; onnxruntime "
        f"{onnxruntime.__version__}, onnx {onnx.__version__}, timm {version('timm')}, torch {torch.__version__}, "
        f"lrpc at {commit()}). What each column is: `benchmarks/quantized_zoo.py`'s docstring.",
        "",
        f"Random weights (`pretrained=False`, seeded), prepared and exported as in MODERN_ZOO.md ({SIZE}×{SIZE}, "
        f"opset 17), then `quantize_static(..., quant_format=QuantFormat.QDQ)`: MinMax calibration on "
        f"{CALIBRATION_BATCHES} seeded batches of {CALIBRATION_BATCH} N(0, 1) inputs, int8 activations "
        f"(asymmetric) and weights (symmetric), per-channel or per-tensor. {SAMPLES} seeded N(0, 1) samples per "
        "cell; verify draws its own 2.",
        "",
        "*Δ outputs*: max |explained logits − the quantized model's logits| (onnxruntime both). *vs float*: "
        "‖R_q − R_f‖/‖R_f‖ against lrpc's relevance of the float model, median / worst (samples explaining the "
        "same class). *ΣR / y*: relevance sum over the explained logit, min … max.",
        "",
        "| model | weights | Q / DQ nodes | option | compiled | Δ outputs | `lrpc verify --source` | vs float "
        "| ΣR / y |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "export_error" in r:
            out.append(f"| {r['model']} | | | | export failed: `{r['export_error']}` | | | | |")
            continue
        for mode, cells in r["quantized"].items():
            if "quantization_error" in cells:
                out.append(f"| {r['model']} | {mode} | | | quantization failed: `{cells['quantization_error']}` |||||")
                continue
            for label in OPTIONS:
                nodes = f"{cells['quantizers']} / {cells['dequantizers']}"
                out.append(f"| {r['model']} | {mode} | {nodes} | {label} | {' | '.join(_cells(cells[label]))} |")
    out += ["", "## QOperator files (QuantFormat.QOperator, per-tensor weights)", "", "| model | lrpc compile |"]
    out += ["|---|---|"] + [f"| {r['model']} | `{r['qoperator']}` |" for r in rows if "qoperator" in r]
    errors = [f"- {r['model']}, {k}: `{v}`" for r in rows for k, v in r.get("float_errors", {}).items()]
    if errors:
        out += ["", "The float model failed to compile (no *vs float* cell):", ""] + errors
    return "\n".join(out + ["", "## Notes", "", NOTES]) + "\n"


NOTES = """\
- *Δ outputs* is 0 where the explained file runs onnxruntime's integer kernels (QLinearConv, QGemm, …) exactly
  where the quantized model does (compiler/passes/quantized.py): the rules read their own copies of the
  quantized layers, and the int8 activation pairs that onnxruntime's x86 build turns into uint8 before it fuses
  (QDQS8ToU8Transformer: only a QuantizeLinear whose one reader is its DequantizeLinear) are turned so in the
  file, since the rules' reads of the dequantized activations would otherwise stop onnxruntime from doing it.
  Without the second step (lrpc at 2a24b45) none of the explained file's convs fused (ResNet-18, MobileNetV2:
  onnxruntime's optimized graphs; it ran some Adds as QLinearAdd that it runs in float in the quantized model):
  MobileNetV2 and EfficientNet-B0 per-channel were 0.36 and 0.30 off, the other files matched on these 4
  samples nonetheless.
- What the copies cost, `python benchmarks/quantized_zoo.py --copy-cost mobilenetv2_100` (per-channel, batch 16,
  1 thread, 30 interleaved runs, 2026-12-07, x86_64 shared with other work): explained ÷ forward 12.6× with the
  copies, 16.5× with `fusable_forward` switched off, neither copies nor uint8 pairs (13.1× / 17.2× in a second
  run). Off, the file is slower: onnxruntime then fuses none of its units and runs every layer in float between
  its quantizers, which costs more than the float copies do beside an integer forward."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the Markdown report (default: print it)")
    parser.add_argument("--json", type=Path, default=CACHE / "quantized_zoo.json", help="every figure, per sample")
    parser.add_argument("--from-json", type=Path, help="render the report from an earlier run's JSON")
    parser.add_argument("--models", nargs="+", choices=MODELS, help="only these timm models")
    parser.add_argument("--copy-cost", choices=MODELS, help="only time this model's copied layers (copy_cost)")
    args = parser.parse_args(argv)
    if args.copy_cost:
        print(json.dumps(copy_cost(args.copy_cost), indent=1))
        return 0
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        rows, minutes, command = data["rows"], data["minutes"], data["command"]
    else:
        start, rows = time.perf_counter(), []
        for name in args.models or MODELS:
            rows.append(run_model(name))
            print(f"{name}: {rows[-1].get('seconds', '?')} s", file=sys.stderr, flush=True)
        minutes = (time.perf_counter() - start) / 60
        command = command_line("quantized_zoo.py", args.models, args.out)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "minutes": minutes, "command": command}, indent=1))
    write_report(render(rows, command, minutes), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
