"""Where an explained session's memory goes: the tensors alive at once, and what onnxruntime adds.

    python benchmarks/memory_profile.py MODEL.onnx [--rule R | --composite C] [--batch 4] [--threads 2]

For the plain model and its explained graph (compiled here with the given options) this prints

- live set, file order: the largest total of activation bytes alive at once when the nodes run in the
  file's order and each tensor is freed after its last use — what any executor must hold in that order;
- live set, onnxruntime's order: the same in the order onnxruntime actually ran the nodes of its
  optimized graph (from its profiler, with the shapes it recorded);
- peak RSS (VmHWM) of a fresh process that creates the session and runs it 3 times, minus the
  process before it, with onnxruntime's defaults and with its memory-pattern planner off
  (`enable_mem_pattern = False`), and the RSS right after session creation (weights, pre-packed copies);
- the explained graph's run time with and without the memory-pattern planner (interleaved medians).

The explained graph must keep what the backward pass reads (each layer's input activation, the
pooling winners) from the forward pass until the backward pass reaches that layer, where the forward
session frees each activation after its consumer: the live-set ratio is the floor for any one-pass
explanation; the rest is the runtime's. benchmarks/PROFILE.md keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lrpc  # noqa: E402
from lrpc.tensor_sizes import tensor_sizes  # noqa: E402  (shapes at the batch, one place)

MB = 2**20


def _feeds(session, batch: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        i.name: rng.random([d if isinstance(d, int) else batch for d in i.shape], dtype=np.float32)
        for i in session.get_inputs()
    }


def _peak_live(nodes, size: dict, outputs: set) -> int:
    """Largest sum of tensor bytes alive at once; a tensor lives from its producer to its last consumer."""
    last = {name: k for k, node in enumerate(nodes) for name in node.input}
    live, peak = {}, 0
    for k, node in enumerate(nodes):
        live.update({name: size.get(name, 0) for name in node.output})
        peak = max(peak, sum(live.values()))
        for name in set(node.input):
            if name in live and last[name] == k and name not in outputs:
                del live[name]
    return peak


def live_in_file_order(path: str, batch: int) -> int:
    model = onnx.load(path, load_external_data=False)
    sizes = tensor_sizes(model, batch, os.path.dirname(os.path.abspath(path)))
    return _peak_live(list(model.graph.node), sizes, {o.name for o in model.graph.output})


# element sizes of the dtypes onnxruntime's profiler names in a node's output_type_shape
PROFILED_ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "float16": 2, "int32": 4, "float": 4, "int64": 8, "double": 8}


def live_in_runtime_order(path: str, batch: int, threads: int, folder: str) -> int:
    """The live set of the graph onnxruntime optimized `path` into, in the order it ran its nodes (from its
    profiler, with the output shapes it recorded), under lrpc bench's session options (lrpc.bench.session_options:
    the file's recorded node order among them)."""
    import onnxruntime as ort

    from lrpc.bench import session_options

    options = session_options(path, threads)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(folder, "profile")
    options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
    options.log_severity_level = 3  # not the warning that the optimized file is for this machine only
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    session.run(None, _feeds(session, batch))
    with open(session.end_profiling()) as f:
        events = [e for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    by_name = {node.name: node for node in optimized.graph.node}
    nodes, size = [], {}
    for event in sorted(events, key=lambda e: e["ts"]):
        node = by_name.get(event["name"][: -len("_kernel_time")])
        if node is None:
            continue
        nodes.append(node)
        for name, typed in zip(node.output, event["args"].get("output_type_shape", [])):
            ((dtype, dims),) = typed.items()
            size[name] = int(np.prod(dims)) * PROFILED_ITEMSIZE.get(dtype, 4)
    return _peak_live(nodes, size, {o.name for o in optimized.graph.output})


def _rss_child(path: str, batch: int, threads: int, pattern: bool, queue) -> None:
    import onnxruntime as ort

    def status_kb(field):
        with open("/proc/self/status") as f:
            return next(float(line.split()[1]) for line in f if line.startswith(field))

    before = status_kb("VmRSS:")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_mem_pattern = pattern
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    created = status_kb("VmRSS:")
    feeds = _feeds(session, batch)
    for _ in range(3):
        session.run(None, feeds)
    queue.put(((created - before) * 1024, (status_kb("VmHWM:") - before) * 1024))


def rss(path: str, batch: int, threads: int, pattern: bool) -> tuple[float, float]:
    """(bytes after session creation, peak bytes) in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_rss_child, args=(path, batch, threads, pattern, queue))
    child.start()
    child.join()
    return queue.get() if child.exitcode == 0 else (float("nan"), float("nan"))


def pattern_timing(path: str, batch: int, threads: int, rounds: int = 6) -> dict:
    """Median run time (ms) of `path` with the memory-pattern planner on and off, interleaved, first round
    not counted."""
    import time

    import onnxruntime as ort

    sessions = {}
    for pattern in (True, False):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_mem_pattern = pattern
        sessions[pattern] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds, times = _feeds(sessions[True], batch), {True: [], False: []}
    for round_ in range(rounds + 1):
        for pattern, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            if round_:
                times[pattern].append(time.perf_counter() - start)
    return {pattern: float(np.median(t)) * 1e3 for pattern, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--rule")
    ap.add_argument("--composite")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lrpc-memory-") as folder:
        explained = os.path.join(folder, "explained.onnx")
        lrpc.compile(args.model, rule=args.rule, composite=args.composite, output=explained)
        print(
            f"{args.model} ({args.rule or args.composite or 'default composite'}), batch {args.batch}, "
            f"{args.threads} threads, MB"
        )
        print(f"{'':10} {'live, file':>10} {'live, ORT':>10} {'created':>8} {'peak':>8} {'peak, no pattern':>17}")
        for name, path in (("forward", args.model), ("explained", explained)):
            file_order = live_in_file_order(path, args.batch)
            runtime_order = live_in_runtime_order(path, args.batch, args.threads, folder)
            created, peak = rss(path, args.batch, args.threads, pattern=True)
            _, peak_no_pattern = rss(path, args.batch, args.threads, pattern=False)
            print(
                f"{name:10} {file_order / MB:10.0f} {runtime_order / MB:10.0f} {created / MB:8.0f} "
                f"{peak / MB:8.0f} {peak_no_pattern / MB:17.0f}"
            )
        ms = pattern_timing(explained, args.batch, args.threads)
        print(
            f"explained run time, medians of 6 interleaved: {ms[True]:.0f} ms with the memory pattern, "
            f"{ms[False]:.0f} ms without"
        )


if __name__ == "__main__":
    main()
