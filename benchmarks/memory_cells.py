"""Issue 21's memory cells (benchmarks/speed_floor.py): an explained session's peak against the graph's floor,
and where the memory above the floor goes.

    peak ÷ floor        the target, ≤ 1.25×; floor = W + K + T from the graph alone (lrpc.memory_floor)
    held + live         what onnxruntime's own plan keeps: held, the session's RSS once created (the weights
                        as onnxruntime keeps them — packed for its GEMM, reordered for its blocked convs —
                        and the library); live, the most activation bytes alive at once in the graph
                        onnxruntime optimized the file into, in the order it ran it (profiler shapes,
                        memory_profile.live_in_runtime_order)
    peak ÷ (held + live)  what onnxruntime's allocator (its arena) holds above that plan; the plain forward's
                        factor beside it

Every figure is at one batch, in a fresh process per session, under lrpc bench's session options
(lrpc.bench.rss_mb). Verdicts, in order:

- "met";
- "the plain forward misses it too": the plain forward's peak over an upper bound of its own floor (its
  weights + the most activations alive at once in the file's node order) exceeds 1.25×;
- "onnxruntime's packed weights" or "onnxruntime's optimized graph": held + live exceeds 1.25× the floor,
  and the larger excess is named — held less the library's own memory over W, or live over K + T. The peak
  with `--low-memory` (no packed copies) is given with the first;
- "onnxruntime's allocator": held + live is within 1.25× the floor, and the allocator holds the plain forward
  at least as far above its own plan (within 1.1×: the noise between two processes);
- else plain "not met".
"""

from __future__ import annotations

import os
import tempfile

import onnx

from lrpc.bench import peak_rss_mb, rss_mb
from lrpc.memory_floor import memory_floor
from lrpc.schedule import live_bytes
from lrpc.tensor_sizes import tensor_sizes
from memory_profile import live_in_runtime_order

MB = 2**20
MEMORY_TARGET = 1.25  # the explained session's peak ÷ the graph's floor, at the smallest and largest batch
NOISE = 1.1


def forward_floor_mb(path: str, batch: int) -> float | None:
    """The plain model's weights + the most activation bytes alive at once when its nodes run in the file's
    order (lrpc.schedule.live_bytes): a floor that order reaches, so the floor is at most this. None where a
    tensor's size is unknown."""
    floor = memory_floor(path, batch)
    if floor.unknown:
        return None
    model = onnx.load(path, load_external_data=False)
    sizes = tensor_sizes(model, batch, os.path.dirname(os.path.abspath(path)))
    alive = live_bytes(model.graph, list(range(len(model.graph.node))), sizes)
    return (floor.weights + alive) / MB


def runtime_mb(threads: int, folder: str) -> float | None:
    """Peak RSS of an onnxruntime session over one Identity node: the library's own memory, no model's."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    path = os.path.join(folder, "identity.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return peak_rss_mb(path, threads, 1)


def _plan(path: str, batch: int, threads: int) -> dict:
    """{held_mb, peak_mb, live_mb} of one session."""
    held, peak = rss_mb(path, threads, batch) or (None, None)
    with tempfile.TemporaryDirectory(prefix="lrpc-live-") as folder:
        live = live_in_runtime_order(path, batch, threads, folder) / MB
    return dict(held_mb=held, peak_mb=peak, live_mb=live)


def forward_memory(path: str, batch: int, threads: int) -> dict:
    """The plain model's entries of a memory cell at `batch`."""
    plan = _plan(path, batch, threads)
    return {
        "forward_mb": plan["peak_mb"],
        "forward_held_mb": plan["held_mb"],
        "forward_live_mb": plan["live_mb"],
        "forward_floor_mb": forward_floor_mb(path, batch),
    }


def explained_memory(path: str, batch: int, threads: int, forward: dict) -> dict:
    """The memory cell of an explained file at `batch`; `forward`: forward_memory at the same batch."""
    plan = _plan(path, batch, threads)
    low = peak_rss_mb(path, threads, batch, low_memory=True)
    cell = memory_floor(path, batch).summary(plan["peak_mb"])
    return cell | forward | {"held_mb": plan["held_mb"], "live_mb": plan["live_mb"], "low_memory_mb": low}


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def _plans(m: dict) -> tuple[float | None, float | None]:
    """(explained held + live, forward held + live) of cell `m`, MB; None where not measured."""
    explained = m["held_mb"] + m["live_mb"] if m.get("held_mb") is not None and m.get("live_mb") else None
    forward = (m.get("forward_held_mb") or 0) + (m.get("forward_live_mb") or 0)
    return explained, forward or None


def verdict(m: dict, runtime: float | None) -> str:
    """The verdict of memory cell `m` (explained_memory's entries); `runtime`: runtime_mb."""
    over = m["explained_peak_over_floor"]
    if over is None:
        return "not run"
    if over <= MEMORY_TARGET:
        return "met"
    forward_over = _ratio(m.get("forward_mb"), m.get("forward_floor_mb"))
    if forward_over is not None and forward_over > MEMORY_TARGET:
        return "**not met**: the plain forward misses it too"
    plan, forward_plan = _plans(m)
    if plan is None:
        return "**not met**"
    if plan > MEMORY_TARGET * m["floor_mb"]:
        weights_excess = m["held_mb"] - (runtime or 0.0) - m["weights_mb"]
        if weights_excess >= m["live_mb"] - m["kept_mb"] - m["transient_mb"]:
            low = _ratio(m.get("low_memory_mb"), m["floor_mb"])
            return "**not met**: onnxruntime's packed weights" + (f" (`--low-memory`: {low:.2f}×)" if low else "")
        return "**not met**: onnxruntime's optimized graph"
    allocator = over * m["floor_mb"] / plan
    forward = _ratio(m.get("forward_mb"), forward_plan)
    if forward is not None and forward * NOISE >= allocator:
        return "**not met**: onnxruntime's allocator"
    return "**not met**"


def table(rows: list, runtime: float | None) -> list[str]:
    """The memory table's lines for the rows that have a memory cell."""
    lines = [
        "Memory: the explained session's peak RSS (a fresh process, creation and 3 runs) over the graph's floor; "
        f"target ≤ {MEMORY_TARGET}×. benchmarks/memory_cells.py says what each column measures"
        + (
            f"; an onnxruntime session over one Identity node peaks at {runtime:.1f} MB (library, allocator, "
            "thread pool)."
            if runtime
            else "."
        ),
        "",
        "| model | method | batch | floor MB (W + K + T) | peak MB | peak ÷ floor | forward peak MB (÷ its floor ≤) "
        "| held + live MB | (held + live) ÷ floor | peak ÷ (held + live) (forward's) | `--low-memory` ÷ floor "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["memory"]
        over = m["explained_peak_over_floor"]
        peak = over * m["floor_mb"] if over else None
        floor = f"{m['floor_mb']:.0f} ({m['weights_mb']:.0f} + {m['kept_mb']:.0f} + {m['transient_mb']:.0f})"
        if m["unknown_size_tensors"]:
            floor += f"; {m['unknown_size_tensors']} tensors of unknown size left out"
        forward_over = _ratio(m.get("forward_mb"), m.get("forward_floor_mb"))
        forward = f"{m['forward_mb']:.0f}" if m.get("forward_mb") else "not run"
        forward += f" ({forward_over:.2f}×)" if forward_over else ""
        plan, forward_plan = _plans(m)
        cells = [
            r["model"],
            r["method"],
            r["batch"],
            floor,
            f"{peak:.0f}" if peak else "not run",
            f"{over:.2f}×" if over else "—",
            forward,
            f"{m['held_mb']:.0f} + {m['live_mb']:.0f}" if plan else "—",
            f"{plan / m['floor_mb']:.2f}×" if plan else "—",
            f"{peak / plan:.2f}× ({m['forward_mb'] / forward_plan:.2f}×)" if plan and peak and forward_plan else "—",
            f"{m['low_memory_mb'] / m['floor_mb']:.2f}×" if m.get("low_memory_mb") else "—",
            verdict(m, runtime),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines
