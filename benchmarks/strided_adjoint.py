"""The transposed map of a strided Conv, three ways, on the strided layers of MobileNetV2/EfficientNet and ResNet-50.

    python benchmarks/strided_adjoint.py [--batch 1 16] [--rounds 7] [--threads 2] [--image 224]

For y = Conv(x, W, stride s) the relevance rules need Wᵀ ȳ (the input-shaped adjoint). Per spatial axis
(dilation 1), the input position i = q·s + r of phase r gets the taps k ≡ r + p (mod s):

    x̄[q·s + r] = Σⱼ W[k₀ + j·s] · ȳ[q + c − j],   k₀ = (r + p) mod s,  c = (r + p − k₀) / s

— for each phase a stride-1 correlation of ȳ with the phase's taps reversed. So:

A  ConvTranspose(ȳ, W, strides s) — what lrpc emitted up to this benchmark;
B  polyphase: one stride-1 Conv per phase (s² in 2-D; its kernel ⌈(k − k₀)/s⌉ taps per axis), Concat along
   channels, DepthToSpace (DCR), Slice to the input size; the same multiply-adds as the forward conv;
C  zero insertion: ȳ with s − 1 zeros between elements (Reshape, Pad, Reshape), then one stride-1 Conv on the
   flipped kernel — s² times the forward's multiply-adds, most of them on zeros.

All three are checked against each other (float32, max |difference| relative to max |A|) before timing;
times are medians of interleaved rounds within one process (ms).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


# (name, C_in, C_out, group, in size, kernel, stride, pad)
LAYERS = [
    ("dw 96 112→56 k3", 96, 96, 96, 112, 3, 2, 1),
    ("dw 144 56→28 k5", 144, 144, 144, 56, 5, 2, 2),
    ("dw 240 28→14 k3", 240, 240, 240, 28, 3, 2, 1),
    ("dw 672 14→7 k5", 672, 672, 672, 14, 5, 2, 2),
    ("conv 128 56→28 k3", 128, 128, 1, 56, 3, 2, 1),
    ("conv 256→512 56→28 k1", 256, 512, 1, 56, 1, 2, 0),
    ("stem 3→64 224→112 k7", 3, 64, 1, 224, 7, 2, 3),
    ("stem 3→32 224→112 k3", 3, 32, 1, 224, 3, 2, 1),
]


def strided_phases(k: int, s: int, pad_begin: int, size: int, out: int) -> list[dict] | None:
    """One axis of a strided Conv's transpose as s stride-1 correlations, one per phase r of the input:

        x̄[q·s + r] = Σⱼ w[k₀ + j·s] · ȳ[q + c − j],   k₀ = (r + p) mod s,  c = (r + p − k₀) / s,

    i.e. ȳ padded by J − 1 − c at the start and correlated with the phase's J taps reversed; each phase
    yields ⌈size / s⌉ positions (the last ones beyond `size` are cropped after interleaving). Returns per
    phase {taps: [k₀, k₀ + s, …], pad_begin, pad_end} (taps empty: the phase is zero, as where the kernel is
    smaller than the stride), or None where a phase would need a negative pad (ȳ cropped: pads far beyond
    the kernel's reach). The end padding is implied by `out`."""
    positions = -(-size // s)
    phases = []
    for r in range(s):
        k0 = (r + pad_begin) % s
        taps = list(range(k0, k, s))
        if not taps:
            phases.append(dict(taps=[], pad_begin=0, pad_end=0))
            continue
        c = (r + pad_begin - k0) // s
        begin = len(taps) - 1 - c
        end = positions - out - begin + len(taps) - 1
        if begin < 0 or end < 0:
            return None
        phases.append(dict(taps=taps, pad_begin=begin, pad_end=end))
    return phases


def out_size(size: int, k: int, s: int, p: int) -> int:
    """Positions of a Conv's output along one axis (pads p on both sides)."""
    return (size + 2 * p - k) // s + 1


def _model(nodes, inits, c_out, out_dim, c_in, in_size):
    graph = helper.make_graph(
        nodes,
        "adjoint",
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, ["n", c_out, out_dim, out_dim])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c_in, in_size, in_size])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def forward(w, c_in, c_out, group, size, k, s, p):
    """F: the forward strided Conv itself, the yardstick (its input x, its output y in the roles of g and x)."""
    out = out_size(size, k, s, p)
    node = helper.make_node("Conv", ["g", "w"], ["x"], strides=[s, s], pads=[p] * 4, group=group)
    return _model([node], {"w": w}, c_in, size, c_out, out)


def conv_transpose(w, c_in, c_out, group, size, k, s, p):
    out = out_size(size, k, s, p)
    out_pad = size - (s * (out - 1) + k - 2 * p)
    node = helper.make_node(
        "ConvTranspose",
        ["g", "w"],
        ["x"],
        strides=[s, s],
        pads=[p] * 4,
        group=group,
        kernel_shape=[k, k],
        output_padding=[out_pad] * 2,
    )
    return _model([node], {"w": w}, c_out, out, c_in, size)


def _phase_kernel(w, group, taps):
    """W's taps of one 2-D phase, reversed, channel axes swapped per group: [C_in, C_out/g, J_h, J_w]."""
    c_out, c_in_g = w.shape[:2]
    rows, cols = taps
    sub = w[:, :, rows[::-1]][:, :, :, cols[::-1]]
    sub = sub.reshape(group, c_out // group, c_in_g, len(rows), len(cols)).transpose(0, 2, 1, 3, 4)
    return sub.reshape(group * c_in_g, c_out // group, len(rows), len(cols))


def polyphase(w, c_in, c_out, group, size, k, s, p):
    out = out_size(size, k, s, p)
    phases = strided_phases(k, s, p, size, out)
    nodes, inits, outputs = [], {}, []
    for rh, ph in enumerate(phases):
        for rw, pw in enumerate(phases):
            name = f"p{rh}{rw}"
            if not (ph["taps"] and pw["taps"]):  # no tap: zeros shaped like phase 0 (which has taps here)
                nodes.append(helper.make_node("ConstantOfShape", ["shape0"], [name]))
                outputs.append(name)
                continue
            inits[name + "w"] = _phase_kernel(w, group, (ph["taps"], pw["taps"]))
            nodes.append(
                helper.make_node(
                    "Conv",
                    ["g", name + "w"],
                    [name],
                    group=group,
                    pads=[ph["pad_begin"], pw["pad_begin"], ph["pad_end"], pw["pad_end"]],
                )
            )
            outputs.append(name)
    if any(n.op_type == "ConstantOfShape" for n in nodes):
        nodes.insert(1, helper.make_node("Shape", ["p00"], ["shape0"]))
    nodes += [
        helper.make_node("Concat", outputs, ["cat"], axis=1),
        helper.make_node("DepthToSpace", ["cat"], ["full"], blocksize=s, mode="DCR"),
        helper.make_node("Slice", ["full", "zero", "end", "axes"], ["x"]),
    ]
    inits.update(zero=np.array([0, 0], np.int64), end=np.array([size, size], np.int64), axes=np.array([2, 3], np.int64))
    return _model(nodes, inits, c_out, out, c_in, size)


def zero_insertion(w, c_in, c_out, group, size, k, s, p):
    out = out_size(size, k, s, p)
    c_in_g = w.shape[1]
    flipped = w[:, :, ::-1, ::-1].reshape(group, c_out // group, c_in_g, k, k).transpose(0, 2, 1, 3, 4)
    flipped = np.ascontiguousarray(flipped.reshape(group * c_in_g, c_out // group, k, k))
    end = size - out * s + p  # ȳ with s − 1 zeros after each element is out·s long; `size` outputs
    nodes = [
        helper.make_node("Reshape", ["g", "s6"], ["g6"]),
        helper.make_node("Pad", ["g6", "pad6"], ["z6"]),
        helper.make_node("Reshape", ["z6", "s4"], ["z4"]),
        helper.make_node("Conv", ["z4", "wf"], ["x"], group=group, pads=[k - 1 - p, k - 1 - p, end, end]),
    ]
    inits = {
        "wf": flipped,
        "s6": np.array([0, c_out, out, 1, out, 1], np.int64),
        "pad6": np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, s - 1, 0, s - 1], np.int64),
        "s4": np.array([0, c_out, out * s, out * s], np.int64),
    }
    return _model(nodes, inits, c_out, out, c_in, size)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", type=int, default=224, help="the network's input size (the layers' sizes scale)")
    args = ap.parse_args(argv)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    rng = np.random.default_rng(0)
    print(
        "| layer | batch | F forward Conv ms | A ConvTranspose ms | B polyphase ms | C zero insertion ms | A ÷ F "
        "| B ÷ F | C ÷ F | max rel. diff B, C |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, c_in, c_out, group, size, k, s, p in LAYERS:
        size = size * args.image // 224
        if args.image != 224:
            name = f"{name.rsplit(' ', 2)[0]} {size}→{out_size(size, k, s, p)} k{k}"
        w = rng.standard_normal((c_out, c_in // group, k, k)).astype(np.float32)
        sessions = {
            key: ort.InferenceSession(
                make(w, c_in, c_out, group, size, k, s, p), options, providers=["CPUExecutionProvider"]
            )
            for key, make in (("F", forward), ("A", conv_transpose), ("B", polyphase), ("C", zero_insertion))
        }
        out = out_size(size, k, s, p)
        for batch in args.batch:
            g = rng.standard_normal((batch, c_out, out, out)).astype(np.float32)
            feeds = {key: {"g": g} for key in "ABC"}
            feeds["F"] = {"g": rng.standard_normal((batch, c_in, size, size)).astype(np.float32)}
            results = {key: sessions[key].run(None, feeds[key])[0] for key in "ABC"}
            scale = np.abs(results["A"]).max()
            diffs = [float(np.abs(results[key] - results["A"]).max() / scale) for key in "BC"]
            times = {key: [] for key in sessions}
            for _ in range(args.rounds):
                for key, sess in sessions.items():
                    start = time.perf_counter()
                    sess.run(None, feeds[key])
                    times[key].append(time.perf_counter() - start)
            ms = {key: 1e3 * float(np.median(v)) for key, v in times.items()}
            print(
                f"| {name} | {batch} | {ms['F']:.2f} | {ms['A']:.2f} | {ms['B']:.2f} | {ms['C']:.2f} | "
                + " | ".join(f"{ms[key] / ms['F']:.2f}" for key in "ABC")
                + f" | {diffs[0]:.1e}, {diffs[1]:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
