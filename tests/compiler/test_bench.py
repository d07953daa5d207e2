"""`lrpc bench`: the table and JSON it prints come from real runs of both graphs (no timing is asserted:
these machines are shared; benchmarks/ holds the measured figures)."""

from __future__ import annotations

import json

import onnx

from lrpc.bench import bench, format_table
from lrpc.cli import main
from nets import small_cnn


def test_bench_runs_both_graphs_at_each_batch(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(small_cnn(), path)
    result = bench(str(path), batches=(1, 3), repeats=2, warmup=1, memory=True, composite="EpsilonPlus")
    assert [r.batch for r in result.batches] == [1, 3]
    for r in result.batches:
        assert r.forward.median_ms > 0 and r.explained.median_ms > 0
        assert abs(r.ratio - r.explained.median_ms / r.forward.median_ms) < 1e-9
    assert result.compile_s > 0 and set(result.session_s) == {"forward", "explained"}
    assert all(v is not None and v >= 0 for v in result.peak_rss_mb.values())
    for name, held in result.held_rss_mb.items():  # what the session holds once created is part of its peak
        assert 0 < held <= result.peak_rss_mb[name]
    assert f"explained {result.held_rss_mb['explained']:.0f} MB" in format_table(result).splitlines()[3]
    floor = result.memory_floor  # at the largest batch, against the explained session's peak
    assert floor["batch"] == 3 and floor["floor_mb"] > 0
    assert abs(floor["explained_peak_over_floor"] - result.peak_rss_mb["explained"] / floor["floor_mb"]) < 1e-9
    assert f"= {floor['explained_peak_over_floor']:.2f}× the floor" in format_table(result)


def test_bench_cli_prints_a_table_and_json(tmp_path, capsys):
    path, out = tmp_path / "m.onnx", tmp_path / "bench.json"
    onnx.save(small_cnn(), path)
    assert (
        main(
            [
                "bench",
                str(path),
                "--rule",
                "epsilon",
                "--batch",
                "2",
                "--repeats",
                "2",
                "--no-memory",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "rule epsilon; 1 thread(s)" in text and "ratio" in text
    data = json.loads(out.read_text())
    assert data["options"]["rule"] == "epsilon" and data["batches"][0]["batch"] == 2
    assert main(["bench", str(path), "--batch", "0"]) == 2
    assert "--batch must be at least 1, not 0" in capsys.readouterr().err


def _wide_dense(width: int) -> onnx.ModelProto:
    """x → Gemm (width × width, 4·width² bytes of weights) → Relu → Gemm → 10 logits."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((width, width)) / width**0.5).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((10, width)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "w2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_low_memory_keeps_a_dense_layers_weights_once(tmp_path):
    """onnxruntime packs W for Wx and again for Wᵀs; --low-memory holds it once: the explained session's peak
    falls by most of one 64 MB copy (measured in a child process, as `lrpc bench` reports it)."""
    path = tmp_path / "wide.onnx"
    onnx.save(_wide_dense(4096), path)
    common = dict(batches=(1,), repeats=1, warmup=0, rule="epsilon")
    packed, low = bench(str(path), **common), bench(str(path), low_memory=True, **common)
    saved = packed.peak_rss_mb["explained"] - low.peak_rss_mb["explained"]
    assert saved > 32, (packed.peak_rss_mb, low.peak_rss_mb)
    assert low.low_memory and "weight prepacking off" in format_table(low)
    assert "prepacking" not in format_table(packed)
