"""The memory floor (lrpc/memory_floor.py) against sizes worked out by hand from known shapes, and the line
`lrpc bench` prints with it."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper

import lrpc
from lrpc.cli import main
from lrpc.memory_floor import floor_line, memory_floor
from nets import make_model, tensor

F32 = 4  # bytes


def tiny_cnn() -> onnx.ModelProto:
    """x [N,1,6,6] → Conv(2, 3×3, pad 1) → Relu r1 [N,2,6,6] → Conv(3) → Relu r2 [N,3,6,6] → Flatten f [N,108]
    → Gemm logits [N,4]."""
    rng = np.random.default_rng(0)
    init = {
        "w1": rng.standard_normal((2, 1, 3, 3)),
        "b1": np.zeros(2),
        "w2": rng.standard_normal((3, 2, 3, 3)),
        "b2": np.zeros(3),
        "w3": rng.standard_normal((108, 4)),
        "b3": np.zeros(4),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"]),
    ]
    return make_model(
        nodes,
        [tensor("x", ["batch", 1, 6, 6])],
        [tensor("logits", ["batch", 4])],
        {k: v.astype(np.float32) for k, v in init.items()},
    )


PLAIN_WEIGHTS = (18 + 2 + 54 + 3 + 432 + 4) * F32
X, R1, R2, LOGITS = 36 * F32, 72 * F32, 108 * F32, 4 * F32  # bytes per sample


def explained() -> onnx.ModelProto:
    return lrpc.compile(tiny_cnn(), rule="epsilon")


def test_kept_activations_are_each_layers_input_and_the_logits():
    floor = memory_floor(explained(), 1)
    # ε needs x, r1 and r2 (each conv's and the Gemm's input; f is a view of r2) and the logits (the start,
    # and the returned output); stabilised z = r + ε and Shape(r2) are computed from them after the forward
    assert set(floor.kept_tensors) == {"x", "r1", "r2", "logits"}
    assert floor.kept == X + R1 + R2 + LOGITS == 880
    assert floor.unknown == []


def test_largest_transient_is_the_second_conv_quotient_net_of_what_is_freed():
    floor = memory_floor(explained(), 1)
    # R / (r2 + ε) at the second conv: R, r2 + ε and the quotient (3 × R2), with r1 (read later, by the first
    # conv's product), x and the logits still held; r2 is no longer needed → 3·432 + 288 + 144 + 16 − 880
    assert floor.transient == 3 * R2 + R1 + X + LOGITS - floor.kept == 864
    assert floor.total == floor.weights + 880 + 864


def test_weights_are_the_plain_initializers_and_small_lrp_constants():
    model = explained()
    floor = memory_floor(model, 1)
    lrp_constants = sum(
        onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer if t.name.startswith("lrp/")
    )
    # every plain weight is still read (forward convs and Gemm); a flipped kernel copy, if the backward
    # convolves with one, is a folded constant of the size of its kernel (18 + 54 floats)
    assert PLAIN_WEIGHTS <= floor.weights <= PLAIN_WEIGHTS + (18 + 54) * F32 + lrp_constants


def test_folded_constants_count_and_the_initializers_only_they_read_do_not():
    rng = np.random.default_rng(1)
    w = {name: rng.standard_normal((4, 3)).astype(np.float32) for name in ("w1", "w2")}
    nodes = [
        helper.make_node("Relu", ["w1"], ["w1p"]),  # folded: w1p counts, w1 (read by nothing else) not
        helper.make_node("MatMul", ["x", "w1p"], ["y1"]),
        helper.make_node("Transpose", ["w2"], ["w2t"]),  # folded twice: w2tt counts, w2t does not
        helper.make_node("Transpose", ["w2t"], ["w2tt"]),
        helper.make_node("MatMul", ["x", "w2tt"], ["y2"]),
        helper.make_node("MatMul", ["x", "w2"], ["y3"]),
    ]  # w2 itself still read
    model = make_model(nodes, [tensor("x", ["n", 4])], [tensor(y, ["n", 3]) for y in ("y1", "y2", "y3")], w)
    floor = memory_floor(model, 5)
    assert floor.weights == 3 * 12 * F32
    assert floor.kept == 5 * (4 + 3 * 3) * F32 and floor.transient == 0  # x and the three outputs


def test_floor_scales_with_the_batch():
    model = explained()
    floors = {b: memory_floor(model, b) for b in (1, 2, 5)}
    assert len({f.weights for f in floors.values()}) == 1
    for b, f in floors.items():
        assert f.batch == b and f.kept == 880 * b and f.transient == 864 * b


def test_tensors_of_unknown_size_are_counted_and_reported():
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("NonZero", ["x"], ["nz"]),
        helper.make_node("Cast", ["nz"], ["z"], to=onnx.TensorProto.FLOAT),
    ]
    model = make_model(nodes, [tensor("x", ["n", 4])], [tensor("y", ["n", 4]), tensor("z", [2, None])], {})
    floor = memory_floor(model, 3)
    assert floor.unknown == ["nz", "z"]
    assert floor.kept == 2 * 3 * 4 * F32  # x and y; z left out
    line = floor_line(floor.summary(), None)
    assert line.endswith("explained peak RSS not measured; floor: 2 tensors of unknown size left out")


def test_floor_line_sets_the_peak_against_the_floor():
    summary = {
        "batch": 16,
        "weights_mb": 528.2,
        "kept_mb": 410.0,
        "transient_mb": 205.0,
        "floor_mb": 1143.2,
        "unknown_size_tensors": 0,
    }
    assert floor_line(summary, 1480.0) == (
        "memory floor (batch 16): weights 528 MB + kept activations 410 MB + "
        "largest transient 205 MB = 1143 MB; explained peak RSS 1480 MB = "
        "1.29× the floor"
    )
    assert "+ largest transient 0.0123 MB" in floor_line({**summary, "transient_mb": 0.0123}, None)


def test_bench_cli_prints_the_floor_at_the_largest_batch(tmp_path, capsys):
    path, out = tmp_path / "m.onnx", tmp_path / "bench.json"
    onnx.save(tiny_cnn(), path)
    assert (
        main(
            [
                "bench",
                str(path),
                "--rule",
                "epsilon",
                "--batch",
                "1,2",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--no-memory",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    floor = memory_floor(explained(), 2)
    assert floor_line(floor.summary(), None) in text.splitlines()
    assert "memory floor (batch 2): weights" in text and "explained peak RSS not measured" in text
    data = json.loads(out.read_text())["memory_floor"]
    assert data["batch"] == 2 and data["kept_mb"] * 2**20 == 2 * 880 and data["explained_peak_over_floor"] is None
    assert abs(data["floor_mb"] - (data["weights_mb"] + data["kept_mb"] + data["transient_mb"])) < 1e-12
