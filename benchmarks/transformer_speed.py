"""lrpc's explained transformers against LXT 2.1 in PyTorch: time per batch, compile time, peak memory.

    .venv/bin/python benchmarks/transformer_speed.py --out benchmarks/SPEED_TRANSFORMERS.md     # ~15 min, 2 cores
    .venv/bin/python benchmarks/transformer_speed.py --models vit --reps 5 --out /tmp/s.md

Models (random seeded weights, float32, eval; nothing downloaded):
* vit   timm vit_tiny_patch16_224 at 224 (197 tokens, hidden 192, 12 layers, 3 heads), weights drawn as in
        benchmarks/transformer_zoo.py `prepare`; input pixels [b, 3, 224, 224]; batches 1 and 8;
* bert  HF BertForSequenceClassification, hidden 768, 12 layers, 12 heads, intermediate 3072, 3 labels,
        eager attention, dropout 0, weights drawn as benchmarks/lxt_hf.py `_init`; input `inputs_embeds`
        [b, 128, 768]; batches 1 and 8.
Both exported TorchScript opset 17, dynamic batch (out/transformer_speed/). `lrpc compile` (the CLI, wall
time of the whole process, `--composite AttnLRP` — the default for these graphs — and `--composite
CPLRP`) writes the explained files.

Methods, all at 2 threads (torch.set_num_threads(2); onnxruntime CPUExecutionProvider with one
SessionOptions: intra_op_num_threads 2, inter_op_num_threads 1, sequential, graph optimisation all,
no spinning of idle pool threads, no memory-pattern planner — as lrpc_runtime.Explainer):
* ort forward      the exported model in onnxruntime;
* lrpc AttnLRP     the explained file (logits + relevance) in onnxruntime; lrpc CPLRP likewise;
* LXT AttnLRP      PyTorch, float32: LXT's rules on the model (vit: transformer_zoo `lxt_view`, LXT's
                   layer_norm_forward / identity_rule_implicit / divide_gradient on timm's LayerNorm,
                   Mlp, Attention; bert: LXT's own `lxt.efficient.models.bert.attnLRP` map via
                   lxt_hf's patch context), forward with x.requires_grad, backward of the sum of each
                   sample's argmax logit, relevance x ⊙ x.grad;
* torch forward    the unpatched torch model under torch.no_grad().
Timing: per (model, batch) the methods are run interleaved — each repetition runs every method once,
the order rotated by one per repetition — after 2 warm-up calls each; the table gives the median (and
min) of `--reps` repetitions. Ratios: explained ÷ ort forward, LXT ÷ lrpc (both AttnLRP).
Peak memory: a fresh subprocess per (model, batch, method) loads only that session / model, resets
VmHWM (write 5 to /proc/self/clear_refs), runs it 3 times and reports VmHWM − RSS after load (MB),
plus the RSS after load. Profile: onnxruntime's profiler on the AttnLRP explained file at batch 8
(5 runs after warm-up): total node time per op type, top 8, share of all node time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
import lxt_hf  # noqa: E402,F401  (first: transformers must be imported before transformer_zoo stubs torchvision)

CACHE = ROOT / "out" / "transformer_speed"
THREADS = 2
BATCHES = (1, 8)
SEQ = 128


# ---------------------------------------------------------------------------------------- models


def bert_config():
    import transformers

    return transformers.BertConfig(
        vocab_size=100,
        max_position_embeddings=512,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
        attn_implementation="eager",
        use_cache=False,
    )


def build_vit():
    import transformer_zoo as tz

    model, source = tz.build("vit_tiny_patch16_224", {}, 224, False)
    return model, source


def build_bert():
    from transformers.models.bert import modeling_bert

    model = lxt_hf._init(modeling_bert.BertForSequenceClassification(bert_config()), 0).eval()
    return lxt_hf.Logits(model, "bert").eval()


def sample(name: str, batch: int) -> np.ndarray:
    g = torch.Generator().manual_seed(11)
    shape = (batch, 3, 224, 224) if name == "vit" else (batch, SEQ, 768)
    return torch.randn(shape, generator=g).numpy()


def torch_model(name: str):
    if name == "vit":
        return build_vit()[0]
    return build_bert()


def source_path(name: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.onnx"
    if path.exists():
        return path
    if name == "vit":
        path.write_bytes(build_vit()[1])
    else:
        import warnings

        model = build_bert()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.from_numpy(sample("bert", 1)),),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
    return path


def explained_path(name: str, composite: str) -> tuple[Path, float]:
    """`lrpc compile` through the CLI (a fresh process each time): (path, wall seconds)."""
    src = source_path(name)
    out = CACHE / f"{name}_{composite}.onnx"
    t = time.perf_counter()
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "lrpc"),
            "compile",
            str(src),
            "--composite",
            composite,
            "-o",
            str(out),
            "--overwrite",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out, time.perf_counter() - t


def lxt_model(name: str):
    """The LXT-patched float32 model and a function x → relevance."""
    if name == "vit":
        import transformer_zoo as tz

        view = tz.lxt_view(build_vit()[0], "attnlrp", dtype=torch.float32)
    else:
        import lxt_hf

        state = build_bert().model.state_dict()
        pmap = lxt_hf.patch_map("bert", "attnlrp")  # LXT's own map: nn.LayerNorm patched, modeling_bert replaced
        with lxt_hf._patched(pmap):
            inner = getattr(lxt_hf._MODULE["bert"], "BertForSequenceClassification")(bert_config())
        inner.load_state_dict(state)
        view = lxt_hf.Logits(inner.eval(), "bert").eval()
        return view, _in_context(lambda: lxt_hf._patched(pmap), _relevance(view))
    return view, _relevance(view)


def _in_context(context, fn):
    """fn run with the patch map applied (nn.LayerNorm.forward is patched class-wide: entering and leaving the
    map per call keeps the plain torch forward, timed in the same process, unpatched; a few dict updates)."""

    def run(x):
        with context():
            return fn(x)

    return run


def _relevance(view):
    def relevance(x: np.ndarray) -> torch.Tensor:
        xt = torch.from_numpy(x).requires_grad_(True)
        logits = view(xt)
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        return (xt * xt.grad).detach()

    return relevance


def session_options(profile: str | None = None):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = THREADS
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # onnxruntime's pool threads spin after each run by default, taking the 2 cores from the torch calls
    # interleaved with them (torch forward was 13x slower than onnxruntime's with spinning on)
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.enable_mem_pattern = False  # as lrpc_runtime.Explainer runs explained files (PROFILE.md §7)
    if profile:
        o.enable_profiling = True
        o.profile_file_prefix = profile
    return o


def session(path: Path, profile: str | None = None):
    """A session under `session_options`, in the file's node order where the file asks for it, as
    lrpc_runtime.Explainer runs it (lrpc.execution_order, compiler/schedule.py)."""
    import onnxruntime as ort
    from lrpc_runtime.session import in_recorded_order

    options = in_recorded_order(session_options(profile), str(path))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


METHODS = ("ort forward", "lrpc AttnLRP", "lrpc CPLRP", "LXT AttnLRP", "torch forward")


def callables(name: str, paths: dict) -> dict:
    fns = {}
    for method, key in (("ort forward", "source"), ("lrpc AttnLRP", "AttnLRP"), ("lrpc CPLRP", "CPLRP")):
        s = session(paths[key])
        fns[method] = (lambda s: lambda x: s.run(None, {"input": x}))(s)
    _, rel = lxt_model(name)
    fns["LXT AttnLRP"] = rel
    plain = torch_model(name)

    def forward(x):
        with torch.no_grad():
            return plain(torch.from_numpy(x))

    fns["torch forward"] = forward
    return fns


# ---------------------------------------------------------------------------------------- measurements


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(name: str, batch: int, method: str, paths: dict) -> dict:
    """In a fresh process: load only `method`, reset VmHWM, run 3 times; MB."""
    torch.set_num_threads(THREADS)
    x = sample(name, batch)
    if method.startswith(("ort", "lrpc")):
        s = session(paths["source" if method == "ort forward" else method.split()[1]])
        fn = lambda x: s.run(None, {"input": x})  # noqa: E731
    elif method == "LXT AttnLRP":
        _, fn = lxt_model(name)
    else:
        plain = torch_model(name)

        def fn(x):
            with torch.no_grad():
                return plain(torch.from_numpy(x))

    loaded = _status_kb("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(3):
        fn(x)
    return {"loaded_mb": loaded / 1024, "peak_increase_mb": (_status_kb("VmHWM:") - loaded) / 1024}


def memory(name: str, batch: int, method: str, paths: dict) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-child",
            json.dumps([name, batch, method, {k: str(v) for k, v in paths.items()}]),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def timing(fns: dict, x: np.ndarray, reps: int) -> dict:
    times = {m: [] for m in fns}
    for m, fn in fns.items():  # warm-up
        fn(x), fn(x)
    order = list(fns)
    for r in range(reps):
        for m in order[r % len(order) :] + order[: r % len(order)]:
            t = time.perf_counter()
            fns[m](x)
            times[m].append(time.perf_counter() - t)
    return {m: {"median": statistics.median(v), "min": min(v), "all": v} for m, v in times.items()}


def profile(path: Path, x: np.ndarray, runs: int = 5) -> list:
    prefix = str(CACHE / f"prof_{path.stem}_{len(x)}")
    s = session(path, profile=prefix)
    s.run(None, {"input": x})
    for _ in range(runs):
        s.run(None, {"input": x})
    trace = json.load(open(s.end_profiling()))
    by_op: dict[str, float] = {}
    for e in trace:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e["dur"]
    total = sum(by_op.values())
    return [(op, us / 1e3 / (runs + 1), us / total) for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["vit", "bert"])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--out", type=Path)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        name, batch, method, paths = json.loads(args.memory_child)
        print(json.dumps(memory_child(name, batch, method, {k: Path(v) for k, v in paths.items()})))
        return 0
    torch.set_num_threads(THREADS)
    load0 = os.getloadavg()
    results = {}
    for name in args.models:
        paths = {"source": source_path(name)}
        res = {"compile_s": {}}
        for composite in ("AttnLRP", "CPLRP"):
            paths[composite], res["compile_s"][composite] = explained_path(name, composite)
        res["size_mb"] = {k: v.stat().st_size / 1e6 for k, v in paths.items()}
        fns = callables(name, paths)
        res["timing"] = {}
        for batch in BATCHES:
            res["timing"][batch] = timing(fns, sample(name, batch), args.reps)
            print(name, batch, {m: round(v["median"], 4) for m, v in res["timing"][batch].items()}, flush=True)
        del fns
        res["profile"] = {k: profile(paths[k], sample(name, 8)) for k in ("AttnLRP", "source")}
        if not args.no_memory:
            res["memory"] = {b: {m: memory(name, b, m, paths) for m in METHODS} for b in BATCHES}
        results[name] = res
        print(json.dumps({name: {k: v for k, v in res.items() if k != "timing"}}), flush=True)
    load1 = os.getloadavg()
    text = markdown(results, load0, load1, args.reps)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    else:
        print(text)
    return 0


def markdown(results: dict, load0, load1, reps: int) -> str:
    import onnxruntime as ort

    import lrpc

    label = {
        "vit": "ViT-Tiny (timm vit_tiny_patch16_224, 224², 197 tokens)",
        "bert": "BERT-base (HF BertForSequenceClassification, seq 128, inputs_embeds)",
    }
    lines = [
        "# Explained transformers: lrpc (onnxruntime) beside LXT 2.1 (PyTorch)",
        "",
        f"`benchmarks/transformer_speed.py`, {time.strftime('%Y-%m-%d')}: {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other agents; 1-min load average {load0[0]:.2f} at the start, "
        f"{load1[0]:.2f} at the end (this run uses 2 threads). lrpc {lrpc.__version__}, onnxruntime "
        f"{ort.__version__}, torch {torch.__version__}, LXT 2.1. 2 threads everywhere; methods interleaved "
        f"(order rotated per repetition), median (min) of {reps} repetitions after 2 warm-ups, seconds per batch. "
        "See the script's docstring for every method.",
        "",
        "    .venv/bin/python benchmarks/transformer_speed.py --out benchmarks/SPEED_TRANSFORMERS.md",
        "",
        "| model | batch | ort forward | lrpc AttnLRP | lrpc CPLRP | LXT AttnLRP | torch forward "
        "| AttnLRP ÷ forward | CPLRP ÷ forward | LXT ÷ lrpc AttnLRP | LXT ÷ torch forward |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for batch, t in res["timing"].items():
            med = {m: t[m]["median"] for m in t}
            cells = " | ".join(f"{t[m]['median']:.4f} ({t[m]['min']:.4f})" for m in METHODS)
            lines.append(
                f"| {label[name]} | {batch} | {cells} | {med['lrpc AttnLRP'] / med['ort forward']:.2f}× "
                f"| {med['lrpc CPLRP'] / med['ort forward']:.2f}× "
                f"| {med['LXT AttnLRP'] / med['lrpc AttnLRP']:.2f}× "
                f"| {med['LXT AttnLRP'] / med['torch forward']:.2f}× |"
            )
    lines += [
        "",
        "## Targets (issue 20): explained ÷ forward ≤ 3×, lrpc ≥ 2× faster than LXT (AttnLRP)",
        "",
        "| model | batch | AttnLRP ÷ forward | ≤ 3× | LXT ÷ lrpc | ≥ 2× | torch fwd ÷ ort fwd "
        "| (LXT ÷ torch fwd) ÷ (lrpc ÷ ort fwd) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for batch, t in res["timing"].items():
            ratio = t["lrpc AttnLRP"]["median"] / t["ort forward"]["median"]
            speedup = t["LXT AttnLRP"]["median"] / t["lrpc AttnLRP"]["median"]
            runtime = t["torch forward"]["median"] / t["ort forward"]["median"]
            lines.append(
                f"| {name} | {batch} | {ratio:.2f}× | {'met' if ratio <= 3 else '**not met**'} "
                f"| {speedup:.2f}× | {'met' if speedup >= 2 else '**not met**'} | {runtime:.2f}× "
                f"| {speedup / runtime:.2f}× |"
            )
    lines += [
        "",
        "LXT ÷ lrpc is wall time against wall time, so it carries the two runtimes' forward speeds "
        "(torch fwd ÷ ort fwd: 0.9–1.0× on 2026-12-02's machine, up to 2.2× on 2026-12-07's); the last "
        "column divides that out — each explanation's own cost over its own runtime's forward.",
        "",
        "Why the cells sit where they do, and the floor of the one-graph design (the forward with its "
        "activations kept alive, plus the adjoint matrix products): benchmarks/PROFILE.md §9.",
    ]
    lines += [
        "",
        "## Compile time and file sizes",
        "",
        "| model | `lrpc compile --composite AttnLRP` (s) | `--composite CPLRP` (s) "
        "| source MB | AttnLRP MB | CPLRP MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        c, s = res["compile_s"], res["size_mb"]
        lines.append(
            f"| {name} | {c['AttnLRP']:.1f} | {c['CPLRP']:.1f} | {s['source']:.1f} | {s['AttnLRP']:.1f} "
            f"| {s['CPLRP']:.1f} |"
        )
    if any("memory" in r for r in results.values()):
        lines += [
            "",
            "## Peak memory (fresh process per cell: VmHWM during 3 runs − RSS after load, MB; "
            "RSS after load in brackets)",
            "",
            "| model | batch | " + " | ".join(METHODS) + " |",
            "|---|---|" + "---|" * len(METHODS),
        ]
        for name, res in results.items():
            for batch, mem in res.get("memory", {}).items():
                lines.append(
                    f"| {name} | {batch} | "
                    + " | ".join(f"{mem[m]['peak_increase_mb']:.0f} ({mem[m]['loaded_mb']:.0f})" for m in METHODS)
                    + " |"
                )
    lines += [
        "",
        "## Where the time goes (onnxruntime profiler, batch 8, ms per run by op type, share of node time)",
        "",
    ]
    for name, res in results.items():
        for key in ("AttnLRP", "source"):
            top = ", ".join(f"{op} {ms:.1f} ({share:.0%})" for op, ms, share in res["profile"][key])
            lines.append(f"* {name} {'explained AttnLRP' if key == 'AttnLRP' else 'forward'}: {top}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
