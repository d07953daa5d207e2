"""Batch-explanation throughput, images per second per core: one process vs a local Ray actor pool (issue 11).

For each model the same .npy batch is explained, interleaved over ``--repeats`` rounds (medians reported):

* ``session``: :meth:`Explainer.explain` alone (no files), onnxruntime on 1 and on 2 threads;
* ``files, 1 process``: :func:`explain_files` as ``lrpc explain`` runs it (heatmap PNG per sample and the
  table), onnxruntime on 1 and on 2 threads;
* ``files, Ray``: :func:`explain_files_ray` with 2 actors × 1 thread on a local 2-CPU cluster started once
  (its start time reported apart; each run includes starting the actors and their sessions, so a run on
  2 samples is timed too: that fixed cost, and the rate without it, are reported).

Per core = images/s ÷ cores used (threads, or actors × threads). The machine is shared and noisy, so the
report gives medians and ratios, the load average before and after each model, versions and thread counts.
Models: the bundled digits CNN (1×8×8, EpsilonPlus) and VGG-16's conv stack at 3×64×64 (models/vgg.py,
seeded weights, 10 classes, EpsilonPlusFlat).

    python benchmarks/throughput.py --out benchmarks/THROUGHPUT.md      # ~6 min on 2 busy cores
    python benchmarks/throughput.py --quick                             # digits only, a few seconds a run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "models"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster: no token in $HOME

import lrpc  # noqa: E402
import onnxruntime as ort  # noqa: E402
from lrpc_runtime import Explainer, explain_files, explain_files_ray  # noqa: E402

ACTORS = 2
RAY_FIXED = "files, Ray, 2 samples (the fixed cost of a run)"


def digits_case(folder: Path, samples: int) -> tuple[Path, Path, str]:
    """The bundled digits CNN, explained with EpsilonPlus; the test digits tiled to ``samples``."""
    model = folder / "digits_explained.onnx"
    lrpc.compile(ROOT / "models" / "digits_cnn.onnx", composite="EpsilonPlus", output=model)
    x = np.load(ROOT / "models" / "digits_test.npz")["x"]
    np.save(folder / "digits.npy", np.resize(x, (samples, *x.shape[1:])))
    return model, folder / "digits.npy", "digits CNN, 1×8×8"


def vgg_case(folder: Path, samples: int) -> tuple[Path, Path, str]:
    """VGG-16's 13 convs at 3×64×64 (seeded, a 256-wide dense layer, 10 classes), EpsilonPlusFlat."""
    import vgg

    source = folder / "vgg16_64.onnx"
    vgg.save(vgg.vgg(vgg.VGG16_CONFIG, (3, 64, 64), classes=10, hidden=(256,), seed=0), source)
    model = folder / "vgg16_64_explained.onnx"
    lrpc.compile(source, output=model)
    x = np.random.default_rng(0).random((samples, 3, 64, 64), dtype=np.float32)
    np.save(folder / "vgg.npy", x)
    return model, folder / "vgg.npy", "VGG-16 convs, 3×64×64"


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(model: Path, data: Path, out: Path, batch: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per run of each configuration, rounds interleaved so that load swings hit them all."""
    x = np.load(data)
    np.save(out.parent / "two.npy", x[:2])
    sessions = {threads: Explainer(model, threads=threads, batch_size=batch) for threads in (1, 2)}
    for explainer in sessions.values():
        explainer.explain(x[:batch])  # warm-up: first-run allocations
    configs = {
        "session, 1 thread": (1, lambda: sessions[1].explain(x)),
        "session, 2 threads": (2, lambda: sessions[2].explain(x)),
        "files, 1 process, 1 thread": (
            1,
            lambda: explain_files(
                sessions[1], [data], out / "local1", batch_size=batch, progress=False, overwrite=True
            ),
        ),
        "files, 1 process, 2 threads": (
            2,
            lambda: explain_files(
                sessions[2], [data], out / "local2", batch_size=batch, progress=False, overwrite=True
            ),
        ),
        f"files, Ray, {ACTORS} actors × 1 thread": (
            ACTORS,
            lambda: explain_files_ray(
                model, [data], out / "ray", actors=ACTORS, batch_size=batch, progress=False, overwrite=True
            ),
        ),
        RAY_FIXED: (
            ACTORS,
            lambda: explain_files_ray(
                model,
                [out.parent / "two.npy"],
                out / "ray2",
                actors=ACTORS,
                batch_size=1,
                progress=False,
                overwrite=True,
            ),
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(repeats):
        for name, (_, run) in configs.items():
            seconds[name].append(timed(run))
    return {name: {"cores": configs[name][0], "seconds": s} for name, s in seconds.items()}


def versions() -> dict[str, str]:
    import ray

    return {
        "python": platform.python_version(),
        "lrpc": lrpc.__version__,
        "onnxruntime": ort.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
    }


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def rate_rows(samples: int, result: dict) -> list[tuple[str, int, float, float, float, float]]:
    """(config, cores, median s, images/s, images/s per core, spread) per configuration."""
    rows = []
    for name, entry in result.items():
        median = statistics.median(entry["seconds"])
        spread = (max(entry["seconds"]) - min(entry["seconds"])) / median
        count = 2 if name == RAY_FIXED else samples
        rows.append((name, entry["cores"], median, count / median, count / median / entry["cores"], spread))
    return rows


def model_section(case: dict) -> list[str]:
    rows = rate_rows(case["samples"], case["result"])
    rate = {name: r for name, _, _, r, _, _ in rows}
    ray_name = next(name for name in rate if name.startswith("files, Ray") and name != RAY_FIXED)
    fixed = statistics.median(case["result"][RAY_FIXED]["seconds"])
    steady = case["samples"] / max(statistics.median(case["result"][ray_name]["seconds"]) - fixed, 1e-9)
    lines = [
        f"### {case['title']}",
        "",
        f"{case['samples']} samples, batch {case['batch']}, {case['repeats']} rounds; load average "
        f"(1/5/15 min) {case['load_before']} before, {case['load_after']} after.",
        "",
        "| configuration | cores | median s | images/s | images/s per core | spread (max−min)/median |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {c} | {m:.2f} | {r:.1f} | {p:.1f} | {s:.0%} |" for n, c, m, r, p, s in rows]
    busiest = max(float(case["load_before"].split()[0]), float(case["load_after"].split()[0]))
    if busiest > case["cpus"]:
        lines += [
            "",
            f"The 1-minute load average ({busiest:.1f}) exceeded the {case['cpus']} cores: other processes "
            "held them, so the 2-core configurations could not get 2 cores and their per-core figures "
            "understate what 2 free cores give (compare session on 2 threads with 1).",
        ]
    lines += [
        "",
        f"- Ray ÷ 1 process on 2 threads: **{rate[ray_name] / rate['files, 1 process, 2 threads']:.2f}×**; "
        f"Ray ÷ 1 process on 1 thread: **{rate[ray_name] / rate['files, 1 process, 1 thread']:.2f}×** "
        f"(ideal {ACTORS:.0f}×)",
        f"- without Ray's fixed cost per run ({fixed:.1f} s: planning, starting {ACTORS} actors and their "
        f"sessions, the table), Ray runs at {steady:.1f} images/s = {steady / ACTORS:.1f} per core: "
        f"{steady / rate['files, 1 process, 1 thread']:.2f}× one process on 1 thread",
        f"- session alone, 2 threads ÷ 1 thread: {rate['session, 2 threads'] / rate['session, 1 thread']:.2f}×; "
        f"files ÷ session on 1 thread (the share left after PNGs and the table): "
        f"{rate['files, 1 process, 1 thread'] / rate['session, 1 thread']:.2f}",
        "",
    ]
    return lines


def report(data: dict) -> str:
    lines = [
        "# Batch-explanation throughput",
        "",
        "Generated by `python benchmarks/throughput.py --out benchmarks/THROUGHPUT.md` (issue 11, item 3). "
        "Medians of interleaved rounds on a shared, noisy machine: compare the ratios, not the absolute "
        "figures. `files` runs write a side-by-side heatmap PNG per sample and the predictions table, "
        "as `lrpc explain` does; Ray runs include starting the actors and their sessions.",
        "",
        f"Machine: {data['cpus']} CPUs ({data['cpu']}); "
        + ", ".join(f"{k} {v}" for k, v in data["versions"].items())
        + f". Local Ray cluster: num_cpus={ACTORS}, started in {data['ray_start_s']:.1f} s (not in the runs). "
        "Threads: onnxruntime `intra_op_num_threads` as listed; each Ray actor 1 thread and 1 Ray CPU.",
        "",
    ]
    for case in data["cases"]:
        lines += model_section(case)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the Markdown report here (default: print it)")
    ap.add_argument("--json", type=Path, help="also write the raw timings as JSON")
    ap.add_argument("--quick", action="store_true", help="digits only, 600 samples, 2 rounds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--digits-samples", type=int, default=6000)
    ap.add_argument("--vgg-samples", type=int, default=192)
    args = ap.parse_args(argv)
    import ray

    cases = [(digits_case, 600 if args.quick else args.digits_samples, 32)]
    if not args.quick:
        cases.append((vgg_case, args.vgg_samples, 8))
    repeats = 2 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="lrpc-tp-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        ray.init(num_cpus=ACTORS, include_dashboard=False, log_to_driver=False, _temp_dir=str(folder / "ray"))
        data = {
            "cpus": os.cpu_count(),
            "cpu": cpu_name(),
            "versions": versions(),
            "ray_start_s": time.perf_counter() - start,
            "cases": [],
        }
        try:
            for build, samples, batch in cases:
                model, inputs, title = build(folder, samples)
                before = load()
                print(f"{title}: {samples} samples × {repeats} rounds ...", file=sys.stderr)
                result = measure(model, inputs, folder / "out", batch, repeats)
                data["cases"].append(
                    {
                        "title": title,
                        "samples": samples,
                        "batch": batch,
                        "repeats": repeats,
                        "cpus": os.cpu_count(),
                        "load_before": before,
                        "load_after": load(),
                        "result": result,
                    }
                )
        finally:
            ray.shutdown()
    text = report(data)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
