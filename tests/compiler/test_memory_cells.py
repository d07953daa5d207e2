"""The verdicts of issue 21's memory cells (benchmarks/memory_cells.py): each names the part of the peak that
exceeds the target, from the figures given, and a cell is only called met at or under 1.25× its floor."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import memory_cells  # noqa: E402
from test_memory_floor import tiny_cnn  # noqa: E402

import lrpc  # noqa: E402

RUNTIME = 12.0


def cell(peak, floor=(500, 50, 400, 50), held=None, live=None, forward=(200, 180, 60, 80), low=None):
    """A memory cell: the explained peak (MB), floor = (total, W, K, T), the explained session's held and live
    MB, the forward's (peak, floor bound, held, live), the --low-memory peak."""
    total, w, k, t = floor
    return {
        "explained_peak_over_floor": peak / total,
        "floor_mb": total,
        "weights_mb": w,
        "kept_mb": k,
        "transient_mb": t,
        "unknown_size_tensors": 0,
        "held_mb": held,
        "live_mb": live,
        "low_memory_mb": low,
        "forward_mb": forward[0],
        "forward_floor_mb": forward[1],
        "forward_held_mb": forward[2],
        "forward_live_mb": forward[3],
    }


@pytest.mark.parametrize(
    "m, expected",
    [
        (cell(625), "met"),  # 1.25× exactly
        (cell(700, forward=(260, 200, 60, 80)), "**not met**: the plain forward misses it too"),  # 1.3×
        (cell(900, held=300, live=460, low=640), "**not met**: onnxruntime's packed weights (`--low-memory`: 1.28×)"),
        (cell(900, held=80, live=700), "**not met**: onnxruntime's optimized graph"),  # 700 − 450 > 80 − 12 − 50
        (cell(800, held=80, live=460), "**not met**: onnxruntime's allocator"),  # 800/540 = 1.48 ≤ 1.1 × 200/140
        (cell(800, held=80, live=460, forward=(150, 140, 60, 80)), "**not met**"),  # forward's allocator 1.07×
        (cell(800), "**not met**"),  # no plan measured: nothing to name
    ],
)
def test_each_verdict_names_what_exceeds_the_target(m, expected):
    assert memory_cells.verdict(m, RUNTIME) == expected


def test_a_cell_not_measured_is_not_run():
    assert memory_cells.verdict({**cell(600), "explained_peak_over_floor": None}, RUNTIME) == "not run"


def test_an_explained_cell_is_measured_and_rendered(tmp_path):
    source, explained = tmp_path / "source.onnx", tmp_path / "explained.onnx"
    onnx.save(tiny_cnn(), source)
    lrpc.compile(str(source), output=str(explained), rule="epsilon")
    forward = memory_cells.forward_memory(str(source), 4, 1)
    m = memory_cells.explained_memory(str(explained), 4, 1, forward)
    assert 0 < m["held_mb"] <= m["explained_peak_over_floor"] * m["floor_mb"]
    assert m["live_mb"] > 0 and m["low_memory_mb"] > 0 and m["forward_floor_mb"] > 0
    header, rule, row = memory_cells.table([{"model": "tiny", "method": "ε", "batch": 4, "memory": m}], RUNTIME)[2:]
    assert header.count("|") == rule.count("|") == row.count("|")
    assert row.endswith(f"| {memory_cells.verdict(m, RUNTIME)} |")
