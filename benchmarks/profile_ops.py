"""Where an explained graph spends its time, per ONNX op type, from onnxruntime's own profiler.

    python benchmarks/profile_ops.py MODEL.onnx [--rule R | --composite C] [--batch 1] [--threads 2] [--runs 4]

Compiles MODEL with the given options, runs the plain model and the explained graph `--runs` times
each (after one warm-up run) with profiling on, and prints, for each, the kernel time per op type
(ms per run) and how many nodes of that type ran. benchmarks/PROFILE.md keeps what this showed
before and after each speed change.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lrpc  # noqa: E402


def op_times(path: str, batch: int, threads: int, runs: int, folder: str) -> tuple[dict, dict]:
    """({op type: ms per run}, {op type: nodes per run}) of `path` under onnxruntime's profiler."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(folder, "profile")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.random.default_rng(0).random([d if isinstance(d, int) else batch for d in i.shape], dtype=np.float32)
        for i in session.get_inputs()
    }
    session.run(None, feeds)  # the profiler records this warm-up run too: times are averaged over runs + 1
    for _ in range(runs):
        session.run(None, feeds)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"] / 1e3
            count[e["args"]["op_name"]] += 1
    return ({op: ms / (runs + 1) for op, ms in total.items()}, {op: n // (runs + 1) for op, n in count.items()})


def report(name: str, times: dict, counts: dict, top: int = 12) -> str:
    lines = [f"{name}: {sum(times.values()):.0f} ms per run in kernels"]
    for op, ms in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {op:<20} {ms:9.1f} ms  ×{counts[op]}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--rule")
    ap.add_argument("--composite")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        explained = os.path.join(folder, "explained.onnx")
        lrpc.compile(args.model, rule=args.rule, composite=args.composite, output=explained)
        for name, path in (("forward", args.model), ("explained", explained)):
            print(report(name, *op_times(path, args.batch, args.threads, args.runs, folder)))


if __name__ == "__main__":
    main()
