"""Issue 21's grid beside its floors: explained ÷ forward per target cell, what the products alone take,
and what the plain gradient and LRP-0's gradient form take.

    .venv/bin/python benchmarks/speed_floor.py --out benchmarks/SPEED_FLOOR.md --json out/speed_floor/floor.json
    .venv/bin/python benchmarks/speed_floor.py --models small_cnn --batches 8 --out /tmp/floor.md   # a minute

Models (seeded random weights, nothing downloaded): VGG-16 and ResNet-50 as benchmarks/speed.py builds
them, the small VGG-style CNN of the issue (models/vgg.py: five 3×3 convs 32–128 channels, 64×64),
MobileNetV2 and EfficientNet-B0 as benchmarks/modern_speed.py exports them (timm, 224×224), ViT-Tiny as
benchmarks/transformer_speed.py does. Needs timm (benchmarks/timm_env.sh) for the last three.

Per (model, batch, method), in onnxruntime CPU at --threads under lrpc bench's session options (no
spinning, no memory pattern), the plain forward and the explained file interleaved after warm-up
(`lrpc.bench.time_interleaved`, medians), then:

    ratio             explained ÷ forward, wall time;
    products' part    the ratio × the share of the explained graph's kernel time spent in its matrix
                      products — Conv, ConvTranspose, Gemm, MatMul and their fused forms, forward and
                      adjoint (onnxruntime's profiler, PROFILED runs of a separate session): the products
                      alone in units of the forward's time. No rewriting of the element-wise part of the
                      graph takes the ratio below it; only faster products would. (A share, not the
                      profiled milliseconds over the profiled forward's: the profiler's per-node cost and
                      the load at its moment are not the timed run's);
    + routes          the same share for the products and the max pools' routing (MaxPool, with its
                      winner indices, MaxUnpool, ScatterElements): onnxruntime has no faster exact route
                      to the winners (three alternatives measured slower: PROFILE.md §8, §10);
    kernels ÷ fwd     the profiled explained kernel time over the profiled forward's, for comparison;
    gradient ratio    the ratio of the plain gradient (`method="gradient"`) of the same model and batch:
                      the adjoint products, the same pooling routes, one mask multiply per ReLU — lrpc's
                      cheapest backward pass over this graph, no LRP rule's quotients;
    LRP-0 form ratio  the ratio of LRP-0 in gradient form (ε = 1e-12, `convention="lxt"`, which compile
                      builds as R = x ⊙ g: lrpc/gradient_form.py; the script checks that it does): the
                      same backward pass with every gate held as the rules hold it (SiLU and GELU as
                      identities, squeeze-excitation gates fixed) and no stabilised quotient — the ε
                      rule's work less its stabilisers, where the plain gradient differentiates the gates;
    gradient + own    for the composites whose rules run products of their own (z⁺'s W⁺x and its adjoint,
    products          γ's (W + γW⁺)x): the gradient ratio plus the products' part by which the rule's
                      exceeds the gradient's — the gradient's element-wise work with the rule's products.
                      A rule's element-wise part is not below the gradient's: per layer it divides by a
                      stabilised product that is not the forward's z (a Div, which onnxruntime's blocked
                      layout does not keep: PROFILE.md §10) where the gradient multiplies by a mask.

Verdict: "met"; "products' floor" where the products' part alone reaches the target, "products' and routes'
floor" where they do with the routes; "the gradient misses
it too" where the plain gradient's ratio does and is at most 1.1× the rule's (the noise between two cells;
EfficientNet's SiLU gradient costs 1.2–1.3× its ε rule, AttnLRP holds what the gradient differentiates:
no bound there), "LRP-0's gradient form misses it too" and "the gradient with the rule's own products
misses it too" likewise; else plain "not met" (the rule's element-wise passes over its products are the
gap). Memory (--memory): at the smallest and largest batch, each explained session's peak RSS over the graph's
floor, what onnxruntime's own plan holds and what its allocator adds (benchmarks/memory_cells.py, which
gives the columns and the verdicts); --memory-only measures those again for the rows --json holds, without
timing them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "models")]

import lrpc  # noqa: E402
from lrpc.api import plan  # noqa: E402
from lrpc.bench import _session, time_interleaved  # noqa: E402
from lrpc.describe import gradient_form_taken  # noqa: E402
from memory_cells import explained_memory, forward_memory, runtime_mb, table  # noqa: E402
from profile_ops import op_times  # noqa: E402

WORK = ROOT / "out" / "speed_floor"
PRODUCTS = {"Conv", "FusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}
ROUTES = {"MaxPool", "MaxUnpool", "ScatterElements"}  # max pooling and its winners' routes
METHODS = {
    "ε": dict(rule="epsilon"),  # ε = 1e-6, the lrpc convention
    "EpsilonPlusFlat": dict(composite="EpsilonPlusFlat"),
    "EpsilonGammaBox": dict(composite="EpsilonGammaBox:low=0,high=1"),  # inputs U[0, 1)
    "AttnLRP": dict(composite="AttnLRP"),
    "gradient": dict(method="gradient"),
    "LRP-0 form": dict(rule="epsilon:eps=1e-12", convention="lxt"),
}
BOUNDS = ("gradient", "LRP-0 form")  # measured per model and batch, no target of their own
OWN_PRODUCTS = ("EpsilonPlusFlat", "EpsilonGammaBox")  # rules with products the gradient does not run
TARGETS = {"ε": 2.2, "EpsilonPlusFlat": 3.0, "EpsilonGammaBox": 3.3}
CNN = ("ε", "EpsilonPlusFlat", "EpsilonGammaBox")
MODELS = {  # name: (methods with a target, ε's target where it is not 2.2)
    "small_cnn": (CNN, None),
    "vgg16": (CNN, None),
    "resnet50": (CNN, None),
    "mobilenetv2": (CNN, None),
    "efficientnet_b0": (("ε",), 2.5),
    "vit_tiny": (("ε", "AttnLRP"), 2.5),
}
ROUNDS = {"vgg16": 5, "resnet50": 7, "small_cnn": 30}  # timed rounds; the others 10
PROFILED = {"vgg16": 2, "resnet50": 3, "small_cnn": 20}  # profiled runs (after one warm-up); the others 5


def source(name: str) -> Path:
    """The plain model's ONNX file, built or exported once into WORK."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{name}.onnx"
    if path.exists():
        return path
    if name in ("vgg16", "small_cnn"):
        import vgg

        net = vgg.vgg16(seed=0) if name == "vgg16" else vgg.vgg([32, 32, "M", 64, 64, "M", 128, "M"], (3, 64, 64))
        vgg.save(net, path)
    elif name == "resnet50":
        import resnet
        import torch_cases

        resnet.save(torch_cases._resnet_case(name, resnet.resnet50(seed=0)).export, path)
    elif name == "vit_tiny":  # in a process of its own: transformers must load before the torchvision stub
        code = "import transformer_speed; print(transformer_speed.source_path('vit'))"
        done = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, check=True)
        return Path(done.stdout.split()[-1])
    else:
        import modern_speed

        exported = modern_speed.export({"mobilenetv2": "mobilenetv2_100"}.get(name, name), WORK)
        exported.rename(path)
    return path


def kernel_ms(path: str, batch: int, threads: int, runs: int) -> tuple[float, float, float]:
    """(all kernel time, the products', the max pools' and their routes') per run, ms."""
    with tempfile.TemporaryDirectory() as folder:
        times, _ = op_times(path, batch, threads, runs, folder)
    return tuple(sum(ms for op, ms in times.items() if op in ops) for ops in (times, PRODUCTS, ROUTES))


def part(row: dict, *keys: str) -> float:
    """The wall ratio's part spent in the kernels whose shares of the profiled explained time are `keys`."""
    return row["ratio"] * sum(row[k] for k in keys)


def verdict(ratio: float, target: float | None, products: float, routes: float, bounds: dict) -> str:
    """`bounds`: {bound's name: its ratio at this model and batch}, in the order they are tried."""
    if target is None:
        return "—"
    if ratio <= target:
        return "met"
    if products >= target:
        return "**not met**: products' floor"
    if products + routes >= target:
        return "**not met**: products' and routes' floor"
    for name, bound in bounds.items():
        if bound is not None and target <= bound <= 1.1 * ratio:  # a bound slower than the rule bounds nothing
            return f"**not met**: {name} misses it too"
    return "**not met**"


def cell_bounds(row: dict, bounds: dict) -> dict:
    """{bound's name: ratio} for `row` from `bounds` = {(model, batch, method): bound row}."""
    key = row["model"], row["batch"]
    gradient = bounds.get((*key, "gradient"))
    form = bounds.get((*key, "LRP-0 form"))
    names = {"the gradient": gradient, "LRP-0's gradient form": form}
    out = {name: r["ratio"] if r and r is not row else None for name, r in names.items()}
    if row["method"] in OWN_PRODUCTS and gradient:
        extra = part(row, "products_share") - part(gradient, "products_share")
        out["the gradient with the rule's own products"] = gradient["ratio"] + max(extra, 0.0)
    return out


def measure(name: str, args, rows: list, save) -> None:
    path = str(source(name))
    methods, eps_target = MODELS[name]
    forward = _session(path, args.threads)
    ends = (min(args.batches), max(args.batches)) if args.memory else ()
    forward_cells = {b: forward_memory(path, b, args.threads) for b in set(ends)}
    forward_kernels = {}  # batch → the forward's profiled kernel time, once per model
    for method in BOUNDS + methods:
        done = {r["batch"]: r for r in rows if r["model"] == name and r["method"] == method}
        if done and not args.memory_only:
            continue  # --json resumed
        if method == "LRP-0 form" and not gradient_form_taken(plan(path, **METHODS[method])):
            raise SystemExit(f"{name}: LRP-0 is not built in gradient form here; it bounds nothing")
        with tempfile.TemporaryDirectory() as folder:
            explained = os.path.join(folder, "explained.onnx")
            start = time.perf_counter()
            lrpc.compile(path, output=explained, **METHODS[method])
            compile_s = time.perf_counter() - start
            if args.memory_only:
                for batch in set(ends) & set(done):
                    done[batch]["memory"] = explained_memory(explained, batch, args.threads, forward_cells[batch])
                    print(f"{name} {method} b{batch}: memory measured again", file=sys.stderr)
                    save()
                continue
            session = _session(explained, args.threads)
            for batch in args.batches:
                timed = time_interleaved(forward, session, batch, ROUNDS.get(name, 10), warmup=2)
                if batch not in forward_kernels:
                    forward_kernels[batch] = kernel_ms(path, batch, args.threads, PROFILED.get(name, 5))[0]
                kernels, products, routes = kernel_ms(explained, batch, args.threads, PROFILED.get(name, 5))
                row = dict(
                    model=name, method=method, batch=batch, forward_ms=timed.forward.median_ms,
                    explained_ms=timed.explained.median_ms, spread=max(timed.forward.spread, timed.explained.spread),
                    ratio=timed.ratio, kernels_over_forward=kernels / forward_kernels[batch],
                    products_share=products / kernels, routes_share=routes / kernels, compile_s=compile_s,
                )  # fmt: skip
                if batch in ends:
                    row["memory"] = explained_memory(explained, batch, args.threads, forward_cells[batch])
                rows.append(row)
                products = part(row, "products_share")
                print(f"{name} {method} b{batch}: {row['ratio']:.2f}×, products {products:.2f}×", file=sys.stderr)
                save()
            del session


def markdown(result: dict) -> str:
    order = {name: k for k, name in enumerate([*MODELS, *METHODS])}
    rows = sorted(result["rows"], key=lambda r: (order[r["model"]], r["method"] not in BOUNDS, order[r["method"]]))
    bounds = {(r["model"], r["batch"], r["method"]): r for r in rows if r["method"] in BOUNDS}
    runs = [
        f"`{run['command']}` on {run['date']} at commit {run['commit']}, {run['minutes']:.0f} min, load average "
        f"{run['load'][0]:.1f} at the start and {run['load'][1]:.1f} at the end ({run['threads']} threads, "
        f"onnxruntime {run['onnxruntime']} CPU)"
        for run in result["runs"]
    ]
    lines = [
        "# Speed against its floors (issue 21)",
        "",
        f"Generated by {'; then '.join(runs)}. The script's docstring says what each column measures. Ratios "
        "are interleaved medians of one cell; the kernel columns come from a separate profiled run of it."
        + (
            f" The forward floors of rows measured before that column existed were {result['backfilled']}."
            if result.get("backfilled")
            else ""
        ),
        "",
        "| model | method | batch | forward ms | explained ms | ratio | target | products' part | + routes "
        "| kernels ÷ fwd | gradient ratio | LRP-0 form ratio | gradient + own products | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        methods, eps_target = MODELS[r["model"]]
        target = (eps_target or TARGETS["ε"]) if r["method"] in ("ε", "AttnLRP") else TARGETS.get(r["method"])
        cell = cell_bounds(r, bounds)
        products, routes = part(r, "products_share"), part(r, "routes_share")
        lines.append(
            f"| {r['model']} | {r['method']} | {r['batch']} | {r['forward_ms']:.1f} | {r['explained_ms']:.1f} "
            f"| {r['ratio']:.2f}× (±{r['spread']:.0%}) | {f'≤ {target}×' if target else '—'} "
            f"| {products:.2f}× | {products + routes:.2f}× | {r['kernels_over_forward']:.2f}× "
            + "".join(f"| {f'{ratio:.2f}×' if ratio else '—'} " for ratio in [*cell.values(), None][:3])
            + f"| {verdict(r['ratio'], target, products, routes, cell)} |"
        )
    memory = [r for r in rows if r.get("memory")]
    if memory:
        lines += ["", *table(memory, result.get("runtime_mb"))]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of %(default)s")
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--memory-only", action="store_true", help="measure the memory of --json's rows again")
    ap.add_argument("--out", default=str(HERE / "SPEED_FLOOR.md"))
    ap.add_argument("--json", help="keep (and resume from) the rows here")
    ap.add_argument("--from-json", action="store_true", help="only render --json's rows")
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    models = args.models.split(",")
    if unknown := set(models) - set(MODELS):
        ap.error(f"unknown model(s) {', '.join(sorted(unknown))}; known: {', '.join(MODELS)}")
    if args.memory_only and not (args.memory and args.json):
        ap.error("--memory-only measures the rows --json holds again: give --json, and not --no-memory")
    json_path = Path(args.json) if args.json else None
    result = json.loads(json_path.read_text()) if json_path and json_path.exists() else {"rows": [], "runs": []}
    if not args.from_json:
        import onnxruntime

        started, load = time.perf_counter(), os.getloadavg()[0]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        run = dict(
            date=str(datetime.date.today()), commit=commit.stdout.strip(), threads=args.threads,
            command="python benchmarks/speed_floor.py " + " ".join(argv or sys.argv[1:]),
            onnxruntime=onnxruntime.__version__,
        )  # fmt: skip
        result["runs"].append(run)
        if args.memory_only and set(models) == set(MODELS):
            result.pop("backfilled", None)  # every forward floor is measured again

        def save():
            run.update(load=[load, os.getloadavg()[0]], minutes=(time.perf_counter() - started) / 60)
            if json_path:
                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(json.dumps(result, indent=1, ensure_ascii=False))

        if args.memory:
            WORK.mkdir(parents=True, exist_ok=True)
            result["runtime_mb"] = runtime_mb(args.threads, str(WORK))
        for name in models:
            measure(name, args, result["rows"], save)
        save()
    Path(args.out).write_text(markdown(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
