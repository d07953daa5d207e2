"""Speed side by side (issue 8, item 2): lrpc, Zennit 0.5.1 and iNNvestigate 2.1.2 in one run.

    python benchmarks/speed.py --out benchmarks/SPEED.md --json out/speed/speed.json   # ~50 min on 2 cores
    python benchmarks/speed.py --quick --out /tmp/speed.md                             # digits CNN, batch 1

About 50 minutes on 2 shared cores, 15 of them iNNvestigate building its ResNet-50 analyzer graphs.
This process and the iNNvestigate server together take up to ~20 GB at VGG-16 batch 16 (this process
alone reached 16.6 GB); before each model the run waits (--wait-memory) until the shared machine has
NEED_GB available, and --resume continues a run that was stopped midway (the kernel's OOM killer,
when other work takes the memory) from its --json file.

Models: VGG-16 (models/vgg.py, seed 0, 3x224x224) and ResNet-50 (models/resnet.py, seed 0, BatchNorm
kept) at batch 1 and 16, the trained digits CNN (models/digits_cnn.onnx) at batch 1 and 32; the torch
copies carry the same weights (benchmarks/torch_cases.py), the Keras copies too (speed_refs.py).

* lrpc: `lrpc.bench.bench` — explained graph ÷ plain forward in onnxruntime, interleaved — for rule
  epsilon (ε = 1e-6) and the composites EpsilonPlusFlat and EpsilonGammaBox (low 0, high 1: the inputs
  are U[0, 1)), the lrpc specs of benchmarks/zennit_ref.py; also compile time and session creation;
  peak RSS of each session at the larger batch (lrpc.bench.peak_rss_mb, launched from a small process).
* Zennit: the same three as Zennit runs them (zennit_ref.METHODS), ÷ the torch forward, and lrpc's
  wall time ÷ Zennit's, all four steps interleaved in one process (benchmarks/speed_refs.py).
* iNNvestigate: lrp.epsilon and lrp.alpha_1_beta_0 on the Keras copy, graph mode, in the
  .venv-innvestigate server (benchmarks/innvestigate_speed.py), ÷ an onnxruntime forward, beside lrpc's
  counterparts (benchmarks/fidelity.py's INNVESTIGATE mapping: convention innvestigate), interleaved;
  and its first call (the analyzer graph is built then).

The same thread count everywhere (--threads): torch.set_num_threads, onnxruntime's intra-op threads,
TF's intra- and inter-op pools. Warm-up rounds are not counted; medians with spread (p90 − p10) / median.
Progress goes to stderr. `--from-json` re-renders the Markdown of an earlier run without timing anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from functools import partial
from importlib.metadata import version
from pathlib import Path

# Before torch loads libgomp: idle OpenMP threads sleep, so they do not take the cores from onnxruntime
# in the cells where the two alternate (benchmarks/speed_refs.py says why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

LRPC_METHODS = ["epsilon", "EpsilonPlusFlat", "EpsilonGammaBox"]  # zennit_ref.METHODS keys
ANALYZERS = ["lrp.epsilon", "lrp.alpha_1_beta_0"]
BATCHES = {"digits_cnn": (1, 32), "resnet50": (1, 16), "vgg16": (1, 16)}  # run in this order: small first
NEED_GB = {"digits_cnn": 1, "resnet50": 12, "vgg16": 20}  # this process and the iNNvestigate server, at peak
BIG = ("vgg16", "resnet50")
WORK = ROOT / "out" / "speed"


def fmt(ms: float) -> str:
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.3f} ms"


def log(message: str, start=[time.perf_counter()]) -> None:  # noqa: B006  (the run's start, kept)
    rss = next((int(line.split()[1]) / 2**20 for line in open("/proc/self/status") if line.startswith("VmRSS")), 0)
    print(
        f"[{(time.perf_counter() - start[0]) / 60:5.1f} min, load {os.getloadavg()[0]:.1f}, RSS {rss:.1f} GB] "
        f"{message}",
        file=sys.stderr,
        flush=True,
    )


SAVE = {"run": lambda: None}  # measure() points it at the run's checkpoint


def record(rows: list, row: dict, message: str) -> None:
    """Append a measured cell, say so on stderr, and save the run so far (--json)."""
    rows.append(row)
    log(message)
    SAVE["run"]()


def have(rows: list, **key) -> bool:
    """Whether a cell with these fields is measured already (rows loaded by --resume)."""
    return any(all(r.get(k) == v for k, v in key.items()) for r in rows)


# ------------------------------------------------------------------------------------------ models


def prepare(name: str):
    """(ONNX path, torch_cases.Case, (Keras spec, weights)) of a benchmark model, same weights in all three."""
    import torch_cases  # puts models/ on sys.path
    import resnet
    import vgg
    from speed_refs import resnet_spec, sequential_spec

    WORK.mkdir(parents=True, exist_ok=True)
    if name == "digits_cnn":
        case = torch_cases.digits()
        return ROOT / "models" / "digits_cnn.onnx", case, sequential_spec(name, case.view, case.inputs(1).shape[1:])
    path = WORK / f"{name}.onnx"
    if name == "vgg16":
        vgg.save(vgg.vgg16(seed=0), path)
        case = torch_cases.vgg16_full()
        return path, case, sequential_spec(name, case.view, case.inputs(1).shape[1:])
    case = torch_cases._resnet_case(name, resnet.resnet50(seed=0))
    resnet.save(case.export, path)
    return path, case, resnet_spec(name, case.export)


def compiled(path, folder, **options) -> Path:
    """lrpc.compile `path` with `options` into `folder` (for the sessions of the side-by-side cells)."""
    import lrpc

    out = Path(folder) / "explained.onnx"
    lrpc.compile(str(path), output=str(out), **options)
    return out


# ------------------------------------------------------------------------------------------ the three sides


def run_lrpc(name, path, case, args, rows: list) -> None:
    """lrpc.bench for each method and batch (one call each: the repeats differ; memory: run_explained)."""
    from lrpc.bench import bench
    from zennit_ref import METHODS, lrpc_spec

    for method in LRPC_METHODS:
        m = METHODS[method]
        options = {m.kind: lrpc_spec(m, case)}
        for batch in args.batches[name]:
            if have(rows, model=name, method=method, batch=batch):
                continue
            repeats = repeats_of(args, name, batch)
            r = bench(
                str(path),
                batches=(batch,),
                threads=args.threads,
                repeats=repeats,
                warmup=args.warmup,
                memory=False,
                **options,
            )
            b = r.batches[0]
            record(
                rows,
                {
                    "model": name,
                    "method": method,
                    "batch": batch,
                    "repeats": repeats,
                    "load": os.getloadavg()[0],
                    "bench": asdict(r),
                },
                f"{name} b{batch} lrpc {method}: forward {fmt(b.forward.median_ms)}, explained "
                f"{fmt(b.explained.median_ms)} ({b.ratio:.2f}×), compile {r.compile_s:.2f} s",
            )


def peak_rss(path, threads, batch) -> float | None:
    """lrpc.bench.peak_rss_mb, called from a small fresh Python: the session's child reads ru_maxrss,
    which Linux carries over from the forking process's peak, so a big parent would be counted."""
    code = (
        "import json; from lrpc.bench import peak_rss_mb; "
        f"print(json.dumps(peak_rss_mb({str(path)!r}, {threads}, {batch})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_explained(name, path, case, args, memory: list, rows: list) -> None:
    """Per method, one compiled file: its peak RSS at the larger batch, and the Zennit cells
    (ORT forward, torch forward, Zennit, lrpc's graph) at each batch."""
    from speed_refs import session
    from zennit_ref import METHODS, lrpc_spec

    batch, todo = args.batches[name][-1], {}
    for method in LRPC_METHODS:
        todo[method] = (
            not args.no_memory and not have(memory, model=name, method=method),
            []
            if args.no_zennit
            else [b for b in args.batches[name] if not have(rows, model=name, method=method, batch=b)],
        )
    if not any(mem or cells for mem, cells in todo.values()):
        return
    forward_mb = next((r["forward_mb"] for r in memory if r["model"] == name), None)
    if forward_mb is None and any(mem for mem, _ in todo.values()):
        forward_mb = peak_rss(path, args.threads, batch)
    forward = None if args.no_zennit else session(path, args.threads)
    for method, (mem, cells) in todo.items():
        m = METHODS[method]
        if not (mem or cells):
            continue
        with tempfile.TemporaryDirectory(dir=WORK) as folder:
            file = compiled(path, folder, **{m.kind: lrpc_spec(m, case)})
            if mem:
                explained_mb = peak_rss(file, args.threads, batch)
                record(
                    memory,
                    {
                        "model": name,
                        "method": method,
                        "batch": batch,
                        "forward_mb": forward_mb,
                        "explained_mb": explained_mb,
                    },
                    f"{name} b{batch} peak RSS {method}: forward {forward_mb:.0f} MB, explained {explained_mb:.0f} MB",
                )
            if cells:
                zennit_cells(name, case, m, method, forward, lrpc_side(name, file, args), cells, args, rows)


def lrpc_side(name, file: Path, args):
    """lrpc's graph in the reference cells: the file (a fresh session each round, speed_refs.fresh_step) for
    VGG-16 and ResNet-50, whose arenas hold gigabytes; one kept session for the digits CNN, where the two
    untimed runs just before the timed one would warm the caches for it (0.10 ms against 0.16–0.34 ms)."""
    from speed_refs import session

    return file if name in BIG else session(file, args.threads)


def zennit_cells(name, case, m, method, forward, explained, batches, args, rows: list) -> None:
    from speed_refs import zennit_cell

    composite = m.zennit(case)
    for batch in batches:
        t = zennit_cell(
            case, composite, forward, explained, args.threads, batch, repeats_of(args, name, batch), args.warmup
        )
        record(
            rows,
            {
                "model": name,
                "method": method,
                "batch": batch,
                "load": os.getloadavg()[0],
                "timings": {k: asdict(v) for k, v in t.items()},
            },
            f"{name} b{batch} zennit {method}: torch forward {fmt(t['torch_forward'].median_ms)}, "
            f"Zennit {fmt(t['zennit'].median_ms)}, lrpc {fmt(t['lrpc'].median_ms)}",
        )


def run_innvestigate(name, path, case, args, rows: list, info: dict, keras=None) -> None:
    """iNNvestigate cells (per analyzer and batch) into rows; what the server said about itself into info."""
    import numpy as np
    import torch
    from fidelity import INNV_PYTHON, INNVESTIGATE
    from speed_refs import InnvestigateServer, innvestigate_cell, session

    todo = {a: [b for b in args.batches[name] if not have(rows, model=name, analyzer=a, batch=b)] for a in ANALYZERS}
    if not any(todo.values()):
        return
    x = case.inputs(max(args.batches[name]))
    server = InnvestigateServer(INNV_PYTHON, *keras, x, args.threads, WORK / "innvestigate")
    with torch.no_grad():
        ref = case.view(torch.from_numpy(x)).numpy()
    info.update(server.ready, logits_rel=float(np.linalg.norm(server.logits - ref) / np.linalg.norm(ref)))
    log(f"{name}: Keras copy ready in {info['setup_s']:.1f} s, logits vs torch rel. {info['logits_rel']:.1e}")
    forward, options = session(path, args.threads), dict(INNVESTIGATE)
    try:
        for analyzer, batches in todo.items():
            if not batches:
                continue
            with tempfile.TemporaryDirectory(dir=WORK) as folder:
                explained = lrpc_side(name, compiled(path, folder, **options[analyzer]), args)
                for i, batch in enumerate(batches):
                    first = server.request(cmd="first", analyzer=analyzer, batch=batch) if i == 0 else None
                    t = innvestigate_cell(
                        server,
                        analyzer,
                        forward,
                        explained,
                        args.threads,
                        x[:batch],
                        repeats_of(args, name, batch),
                        args.warmup,
                    )
                    record(
                        rows,
                        {
                            "model": name,
                            "analyzer": analyzer,
                            "lrpc": options[analyzer],
                            "batch": batch,
                            "first": first,
                            "load": os.getloadavg()[0],
                            "timings": {k: asdict(v) for k, v in t.items()},
                        },
                        f"{name} b{batch} iNNvestigate {analyzer}: {fmt(t['innvestigate'].median_ms)}, lrpc "
                        f"{fmt(t['lrpc'].median_ms)}, forward {fmt(t['ort_forward'].median_ms)}"
                        + (f", first call {first['first_call_s']:.1f} s" if first else ""),
                    )
    finally:
        server.close()


def repeats_of(args, name, batch) -> int:
    if name not in BIG:
        return args.repeats_small
    return args.repeats if batch == args.batches[name][0] else args.repeats_large


# ------------------------------------------------------------------------------------------ the run


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def machine(args) -> dict:
    """CPU model, cores, memory, versions and the source revision the numbers belong to."""
    import lrpc

    cpu = open("/proc/cpuinfo").read()
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("model name")), "?")
    mem = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    versions = {
        "python": platform.python_version(),
        "lrpc": lrpc.__version__,
        **{p: version(p) for p in ("onnxruntime", "onnx", "torch", "zennit", "numpy")},
    }
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(int(mem) / 2**20, 1),
        "threads": args.threads,
        "versions": versions,
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "compiler", "runtime").splitlines(),
    }


def run(args, result=None) -> dict:
    """Measure every cell of args' models that `result` (an earlier, stopped run's JSON) lacks."""
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    started, load_start = time.time(), os.getloadavg()
    if result is not None:
        redo = [side for side in args.redo.split(",") if side]
        for side in redo:
            result[side] = []
        result.setdefault("resumed", []).append(
            {
                "at": time.ctime(started),
                "load": load_start,
                "redo": redo,
                "commit": git("rev-parse", "--short", "HEAD"),
                "command": "python benchmarks/speed.py " + shlex.join(sys.argv[1:]),
            }
        )
        result["skipped"] = []  # what stopped the earlier run is measured now
        return measure(args, result, started)
    result = {
        "command": "python benchmarks/speed.py " + shlex.join(sys.argv[1:]),
        "started": time.ctime(started),
        "load_start": load_start,
        "machine": machine(args),
        "batches": args.batches,
        "settings": {
            **{k: getattr(args, k) for k in ("warmup", "repeats", "repeats_large", "repeats_small")},
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "models": {},
        "lrpc": [],
        "memory": [],
        "zennit": [],
        "innvestigate": [],
        "skipped": [],
        "wall_s": 0.0,
    }
    return measure(args, result, started)


def measure(args, result, started) -> dict:
    innv, base = not args.no_innvestigate and _innvestigate_ready(result), result.get("wall_s", 0.0)

    def save():
        result["wall_s"] = base + time.time() - started
        checkpoint(args, result)

    SAVE["run"] = save
    for name in args.models:
        wait_for_memory(name, args, result)
        log(f"{name}: building the ONNX, torch and Keras copies")
        path, case, keras = prepare(name)
        result["models"].setdefault(name, {"onnx": str(path.relative_to(ROOT)), "batches": args.batches[name]})
        sides = [
            ("lrpc", run_lrpc, (result["lrpc"],)),
            ("memory and Zennit", run_explained, (result["memory"], result["zennit"])),
        ]
        if innv:
            result["models"][name].setdefault("keras", {})
            sides.append(
                (
                    "iNNvestigate",
                    partial(run_innvestigate, keras=keras),
                    (result["innvestigate"], result["models"][name]["keras"]),
                )
            )
        for side, fn, outputs in sides:
            try:
                fn(name, path, case, args, *outputs)
            except Exception as e:  # keep what was measured; the page says what failed
                traceback.print_exc()
                result["skipped"].append(f"{name}, {side}: stopped by {type(e).__name__}: {e}")
            save()
        del case, keras
    result["load_end"], result["wall_s"] = os.getloadavg(), base + time.time() - started
    return result


def wait_for_memory(name, args, result) -> None:
    """Wait (up to --wait-memory minutes) until the shared machine has NEED_GB[name] available: other
    work's memory plus this run's once got the run OOM-killed in VGG-16's batch-16 cells."""
    start = time.time()
    while True:
        available = next(
            int(line.split()[1]) / 2**20 for line in open("/proc/meminfo") if line.startswith("MemAvailable")
        )
        waited = time.time() - start
        if available >= NEED_GB[name] or waited >= 60 * args.wait_memory:
            break
        log(f"{name}: {available:.1f} GB available, waiting for {NEED_GB[name]} GB")
        time.sleep(30)
    if waited >= 30:
        result.setdefault("waited", []).append({"model": name, "s": waited, "available_gb": available})


def checkpoint(args, result) -> None:
    """The measurements so far, to --json (a run stopped midway keeps them)."""
    if args.json and not args.from_json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False))


def _innvestigate_ready(result) -> bool:
    from fidelity import INNV_PYTHON

    if INNV_PYTHON.exists():
        return True
    missing = INNV_PYTHON.relative_to(ROOT)
    result["skipped"].append(f"iNNvestigate: {missing} missing (bash benchmarks/innvestigate_env.sh)")
    return False


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "SPEED.md", help="the Markdown table (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="also write every measurement as JSON here")
    ap.add_argument("--from-json", type=Path, help="render --out from an earlier --json file; time nothing")
    ap.add_argument("--threads", type=int, default=2, help="threads for torch, onnxruntime and TF (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds, VGG-16/ResNet-50 at batch 1 (default 5)")
    ap.add_argument(
        "--repeats-large", type=int, default=3, help="timed rounds, VGG-16/ResNet-50 at batch 16 (default 3)"
    )
    ap.add_argument("--repeats-small", type=int, default=30, help="timed rounds, digits CNN (default 30)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted rounds before each cell (default 1)")
    ap.add_argument("--models", default=",".join(BATCHES), help="comma-separated subset of %(default)s")
    ap.add_argument("--quick", action="store_true", help="the digits CNN at batch 1 only")
    ap.add_argument("--no-zennit", action="store_true")
    ap.add_argument("--no-innvestigate", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS children")
    ap.add_argument(
        "--wait-memory",
        type=float,
        default=30,
        help="minutes to wait, before each model, for the memory it needs to be available (default 30)",
    )
    ap.add_argument(
        "--resume", action="store_true", help="continue the stopped run in --json: measure only the cells it lacks"
    )
    ap.add_argument(
        "--redo",
        default="",
        metavar="SIDE[,SIDE]",
        help="with --resume: drop these sides' cells "
        "(lrpc, memory, zennit, innvestigate) first, to measure them again with the current code",
    )
    args = ap.parse_args(argv)
    args.models = ["digits_cnn"] if args.quick else [m for m in args.models.split(",") if m]
    if set(filter(None, args.redo.split(","))) - {"lrpc", "memory", "zennit", "innvestigate"} or (
        args.redo and not args.resume
    ):
        ap.error("--redo takes lrpc, memory, zennit, innvestigate, with --resume")
    unknown = set(args.models) - set(BATCHES)
    if unknown:
        ap.error(f"unknown model(s) {', '.join(sorted(unknown))}; known: {', '.join(BATCHES)}")
    args.batches = {m: BATCHES[m][:1] if args.quick else BATCHES[m] for m in args.models}
    return args


def main(argv=None):
    args = parse(argv)
    from speed_report import markdown

    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        earlier = json.loads(args.json.read_text()) if args.resume and args.json and args.json.exists() else None
        result = run(args, earlier)
        checkpoint(args, result)
    args.out.write_text(markdown(result))
    log(f"wrote {args.out}" + (f" and {args.json}" if args.json and not args.from_json else ""))


if __name__ == "__main__":
    main()
