"""`lrpc bench`: what an explanation costs against the plain forward pass, measured in one run.

For each batch size the plain model and the explained graph run in onnxruntime under identical session
options (same threads, same graph optimizations, idle threads sleeping rather than spinning),
interleaved — forward, explained, forward, … — after warm-up runs that are not counted, so that drifting
machine load hits both alike. Reported per batch:

    ratio = median(t_explained) / median(t_forward)        spread = (p90 − p10) / median

plus the compile time, each session's creation time, and each session's peak resident memory: every
session is also built and run in a child process of its own, and its peak RSS (ru_maxrss) less the
child's RSS before the session existed is that session's memory. At the largest batch the explained
graph's memory floor (memory_floor.py: weights + the activations the backward pass must keep + the
largest transient, from the graph) is printed beside the explained session's peak.

Sizes are bounded before anything is compiled or allocated: batch sizes 1–100000 and one batch of random
inputs at most 2 GiB, threads 1–1024, repeats 1–10000, warm-up runs 0–10000.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from lrpc_runtime.limits import MAX_BATCH_BYTES, MAX_BATCH_SIZE, MAX_THREADS, bounded_int, size_text

from .api import compile as compile_model
from .emit import save
from .errors import LrpcError
from .frontend import keras as keras_frontend
from .memory_floor import floor_line, memory_floor

MAX_RUNS = 10_000  # --repeats and --warmup


@dataclass
class Timing:
    median_ms: float
    spread: float  # (p90 − p10) / median


@dataclass
class BatchResult:
    batch: int
    forward: Timing
    explained: Timing
    ratio: float


@dataclass
class BenchResult:
    model: str
    options: dict
    threads: int
    compile_s: float
    session_s: dict  # {"forward": s, "explained": s}
    peak_rss_mb: dict  # {"forward": MB, "explained": MB} (None where not measured)
    batches: list = field(default_factory=list)
    memory_floor: dict | None = None  # Floor.summary at the largest batch (MB), peak over floor if measured
    low_memory: bool = False  # both sessions without weight prepacking (lrpc_runtime.Explainer's low_memory)
    held_rss_mb: dict = field(default_factory=dict)  # {"forward": MB, "explained": MB} right after creation

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def _session(path: str, threads: int, low_memory: bool = False):
    import onnxruntime as ort

    return ort.InferenceSession(path, session_options(path, threads, low_memory), providers=["CPUExecutionProvider"])


def session_options(path: str, threads: int, low_memory: bool = False):
    """The onnxruntime options bench runs `path` under, in the node order the file records."""
    import onnxruntime as ort
    from lrpc_runtime.session import NO_PREPACKING, in_recorded_order

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = False  # as lrpc_runtime.Explainer runs explained files (PROFILE.md §7)
    # Two sessions alternate on the same cores: the idle threads of one would spin and take the cores
    # from the other (a small CNN at batch 8: forward 4.6 ms alone, 10.7 ms interleaved with spinning,
    # 5.0 ms without — PROFILE.md §10), so both sleep between runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if low_memory:
        options.add_session_config_entry(NO_PREPACKING, "1")
    return in_recorded_order(options, path)


def feed_shape(dims, batch: int) -> list[int]:
    """The shape bench feeds for an input of ``dims``: fixed sizes as they are, free ones batch (axis 0) or 1.

    Example::

        >>> feed_shape(["N", 3, None, 8], 16)
        [16, 3, 1, 8]
    """
    return [d if isinstance(d, int) and d > 0 else (batch if k == 0 else 1) for k, d in enumerate(dims)]


def check_sizes(batches, threads: int, repeats: int, warmup: int) -> None:
    """The flags' numbers in range (LrpcError naming the flag), before anything is compiled or allocated:
    batches up to limits.MAX_BATCH_SIZE, threads up to MAX_THREADS, repeats and warm-up runs up to MAX_RUNS."""
    for flag, values, low, high in (
        ("--batch", batches, 1, MAX_BATCH_SIZE),
        ("--threads", [threads], 1, MAX_THREADS),
        ("--repeats", [repeats], 1, MAX_RUNS),
        ("--warmup", [warmup], 0, MAX_RUNS),
    ):
        for value in values:
            try:
                bounded_int(flag, value, low, high)
            except ValueError as err:
                raise LrpcError(str(err)) from None


def check_feed_bytes(model_path: str, batches) -> None:
    """Refuse a batch whose random inputs would pass limits.MAX_BATCH_BYTES, from the ONNX file's input
    shapes (its weights are not read)."""
    graph = onnx.load(model_path, load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    inputs = [
        (v.type.tensor_type.elem_type, [d.dim_value or None for d in v.type.tensor_type.shape.dim])
        for v in graph.input
        if v.name not in weights
    ]
    for batch in batches:
        total = sum(
            math.prod(feed_shape(dims, batch)) * (2 if kind == onnx.TensorProto.FLOAT16 else 4) for kind, dims in inputs
        )
        if total > MAX_BATCH_BYTES:
            raise LrpcError(
                f"--batch {batch}: one batch of the model's inputs is {size_text(total)}, more than "
                f"the {size_text(MAX_BATCH_BYTES)} lrpc bench feeds at once; give smaller batch sizes"
            )


def _feeds(session, batch: int, seed: int = 0) -> dict:
    """Random float inputs of the session's shape (dynamic dims: batch first, else 1), U[0, 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        if "float" not in i.type:
            raise LrpcError(f"lrpc bench feeds random floats; the model's input '{i.name}' is {i.type}")
        dims = feed_shape(i.shape, batch)
        feeds[i.name] = (
            rng.random(dims, dtype=np.float32) if "float16" not in i.type else rng.random(dims).astype(np.float16)
        )
    return feeds


def _timing(samples: list[float]) -> Timing:
    ms = np.asarray(samples) * 1e3
    median = float(np.median(ms))
    return Timing(median, float((np.percentile(ms, 90) - np.percentile(ms, 10)) / median))


def time_interleaved(forward, explained, batch: int, repeats: int, warmup: int) -> BatchResult:
    """Median times of the two sessions at `batch`, run alternately after `warmup` uncounted rounds."""
    feeds = _feeds(forward, batch)
    times = {"forward": [], "explained": []}
    for round_ in range(warmup + repeats):
        for name, session in (("forward", forward), ("explained", explained)):
            start = time.perf_counter()
            session.run(None, feeds)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    f, e = _timing(times["forward"]), _timing(times["explained"])
    return BatchResult(batch, f, e, e.median_ms / f.median_ms)


def _child_rss(path: str, threads: int, batch: int, runs: int, low_memory: bool, queue) -> None:
    """In a child process: RSS growth (MB) from before the session to right after its creation, and to the
    peak over creation and runs."""
    before = _rss_now_kb()
    session = _session(path, threads, low_memory)
    held = _rss_now_kb()
    feeds = _feeds(session, batch)
    for _ in range(runs):
        session.run(None, feeds)
    queue.put(((held - before) / 1024, (_status_kb("VmHWM:") - before) / 1024))


def _rss_now_kb() -> float:
    return _status_kb("VmRSS:")


def _status_kb(field: str) -> float:
    """A /proc/self/status entry in kB (VmHWM is this process's own peak; ru_maxrss would carry the parent's)."""
    with open("/proc/self/status") as f:
        return next(float(line.split()[1]) for line in f if line.startswith(field))


def rss_mb(path: str, threads: int, batch: int, runs: int = 3, low_memory: bool = False) -> tuple | None:
    """(memory the session holds once created, its peak over creation and `runs` runs at `batch`), MB, in a
    fresh process; None where it cannot be measured."""
    if not os.path.exists("/proc/self/status"):
        return None
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child_rss, args=(path, threads, batch, runs, low_memory, queue))
    child.start()
    child.join()
    return queue.get() if child.exitcode == 0 and not queue.empty() else None


def peak_rss_mb(path: str, threads: int, batch: int, runs: int = 3, low_memory: bool = False) -> float | None:
    """Peak memory of one session (creation and `runs` runs at `batch`), measured in a fresh process."""
    measured = rss_mb(path, threads, batch, runs, low_memory)
    return None if measured is None else measured[1]


def bench(
    model_path: str,
    batches=(1,),
    threads: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    memory: bool = True,
    low_memory: bool = False,
    **options,
) -> BenchResult:
    """Compile `model_path` with `options` (as lrpc.compile takes them) and measure it against the model.
    A Keras source is converted to ONNX first (not in the compile time): the plain forward runs that.
    The sizes are checked first (check_sizes, check_feed_bytes)."""
    check_sizes(batches, threads, repeats, warmup)
    with tempfile.TemporaryDirectory(prefix="lrpc-bench-") as folder:
        explained_path = os.path.join(folder, "explained.onnx")
        source = str(model_path)
        if keras_frontend.is_keras_source(model_path):  # the plain forward runs the converted ONNX
            model_path = os.path.join(folder, "forward.onnx")
            save(keras_frontend.load(source), model_path)
        check_feed_bytes(str(model_path), batches)
        start = time.perf_counter()
        compile_model(model_path, output=explained_path, **options)
        compile_s = time.perf_counter() - start
        sessions, session_s = {}, {}
        for name, path in (("forward", model_path), ("explained", explained_path)):
            start = time.perf_counter()
            sessions[name] = _session(str(path), threads, low_memory)
            session_s[name] = time.perf_counter() - start
        result = BenchResult(
            source,
            {k: v for k, v in options.items() if v},
            threads,
            compile_s,
            session_s,
            {"forward": None, "explained": None},
            low_memory=low_memory,
        )
        for batch in batches:
            result.batches.append(time_interleaved(sessions["forward"], sessions["explained"], batch, repeats, warmup))
        if memory:
            del sessions
            measured = {
                name: rss_mb(str(path), threads, max(batches), low_memory=low_memory) or (None, None)
                for name, path in (("forward", model_path), ("explained", explained_path))
            }
            result.held_rss_mb = {name: held for name, (held, _) in measured.items()}
            result.peak_rss_mb = {name: peak for name, (_, peak) in measured.items()}
        result.memory_floor = memory_floor(explained_path, max(batches)).summary(result.peak_rss_mb["explained"])
    return result


def format_table(result: BenchResult) -> str:
    """The result as a small text table."""
    chosen = {k: v for k, v in result.options.items() if k in ("rule", "composite", "method", "rule_map")}
    what = ", ".join(f"{k} {v}" for k, v in chosen.items()) or "the default composite"
    lines = [
        f"{result.model}: {what}; {result.threads} thread(s), onnxruntime CPU"
        + (", weight prepacking off (--low-memory)" if result.low_memory else ""),
        f"compile {result.compile_s:.2f} s; session creation: forward {result.session_s['forward']:.2f} s, "
        f"explained {result.session_s['explained']:.2f} s",
    ]
    rss = result.peak_rss_mb
    if rss["forward"] is not None and rss["explained"] is not None:
        lines.append(
            f"peak RSS (batch {max(r.batch for r in result.batches)}): forward {rss['forward']:.0f} MB, "
            f"explained {rss['explained']:.0f} MB ({rss['explained'] / rss['forward']:.2f}×)"
        )
    held = result.held_rss_mb
    if held.get("forward") is not None and held.get("explained") is not None:
        lines.append(
            f"held once the session is created (weights as onnxruntime packs them, the library): forward "
            f"{held['forward']:.0f} MB, explained {held['explained']:.0f} MB"
        )
    if result.memory_floor is not None:
        lines.append(floor_line(result.memory_floor, rss["explained"]))
    lines.append(f"{'batch':>5}  {'forward ms':>12}  {'explained ms':>14}  {'ratio':>6}")
    for r in result.batches:
        lines.append(
            f"{r.batch:>5}  {r.forward.median_ms:>8.3g} ±{r.forward.spread:>4.0%}  "
            f"{r.explained.median_ms:>9.3g} ±{r.explained.spread:>4.0%}  {r.ratio:>5.2f}×"
        )
    return "\n".join(lines)
