"""Max-pool relevance routing, three ways, on VGG-16's first pool at batch 16 ([16, 64, 224, 224], 2×2/2).

    python benchmarks/maxpool_routing.py

A (what lrpc emits): MaxPool with indices, a zero tensor, ScatterElements(add) of R_y at the winners.
B: a winner mask without indices: Equal(x, y) in window layout, first equal by CumSum, times R_y.
C: the same mask by Split into the four window positions and explicit first-index logic.
All three must agree exactly (ties at 0 and at 1 included); the medians of 5 interleaved runs decide.
Measured (2 threads, onnxruntime 1.32, load 1.4): A 436 ms, B 607 ms, C 633 ms — lrpc keeps A.
"""

import time
import numpy as np
import onnxruntime as ort
from onnx import helper as h, TensorProto as T, numpy_helper as nh

N, C, H, W = 16, 64, 224, 224
Ho, Wo = H // 2, W // 2


def model(nodes, inits):
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, [N, C, H, W]), h.make_tensor_value_info("r", T.FLOAT, [N, C, Ho, Wo])],
        [h.make_tensor_value_info("rx", T.FLOAT, None)],
        [nh.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    m.ir_version = 8
    return m


i64 = lambda *v: np.array(v, np.int64)
# A: current
A = model(
    [
        h.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Size", ["x"], ["n"]),
        h.make_node("Reshape", ["n", "m1"], ["n1"]),
        h.make_node("ConstantOfShape", ["n1"], ["zeros"], value=h.make_tensor("v", T.FLOAT, [1], [0.0])),
        h.make_node("Reshape", ["idx", "m1"], ["idxf"]),
        h.make_node("Reshape", ["r", "m1"], ["rf"]),
        h.make_node("ScatterElements", ["zeros", "idxf", "rf"], ["s"], reduction="add"),
        h.make_node("Shape", ["x"], ["sh"]),
        h.make_node("Reshape", ["s", "sh"], ["rx"]),
    ],
    {"m1": i64(-1)},
)
# B: cumsum winner mask
B = model(
    [
        h.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Reshape", ["x", "s6"], ["xr"]),
        h.make_node("Reshape", ["y", "s6y"], ["yr"]),
        h.make_node("Reshape", ["r", "s6y"], ["rr"]),
        h.make_node("Equal", ["xr", "yr"], ["eq"]),
        h.make_node("Cast", ["eq"], ["f"], to=T.FLOAT),
        h.make_node("CumSum", ["f", "a5"], ["c5"]),
        h.make_node("ReduceSum", ["f", "a5v"], ["rs"], keepdims=1),
        h.make_node("CumSum", ["rs", "a3"], ["c3"], exclusive=1),
        h.make_node("Add", ["c5", "c3"], ["tot"]),
        h.make_node("Equal", ["tot", "one"], ["first"]),
        h.make_node("Cast", ["first"], ["ff"], to=T.FLOAT),
        h.make_node("Mul", ["ff", "f"], ["win"]),
        h.make_node("Mul", ["win", "rr"], ["rxr"]),
        h.make_node("Reshape", ["rxr", "s4"], ["rx"]),
    ],
    {
        "s6": i64(N, C, Ho, 2, Wo, 2),
        "s6y": i64(N, C, Ho, 1, Wo, 1),
        "a5": np.array(5, np.int64),
        "a5v": i64(5),
        "a3": np.array(3, np.int64),
        "one": np.array(1.0, np.float32),
        "s4": i64(N, C, H, W),
    },
)
# C: slices, first-max logic on quarter tensors (2x2): w00=e00, w01=e01&!e00, w10=e10&!(e00|e01), w11=e11&!(e00|e01|e10)
nodes = [
    h.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    h.make_node("Reshape", ["x", "s6"], ["xr"]),
    h.make_node("Reshape", ["y", "s6y"], ["yr"]),
    h.make_node("Reshape", ["r", "s6y"], ["rr"]),
    h.make_node("Equal", ["xr", "yr"], ["eq"]),
    h.make_node("Cast", ["eq"], ["f"], to=T.FLOAT),
]
# taken-before via cumsum is what B does; C: ArgMax-free variant using Split
nodes += [
    h.make_node("Split", ["f"], ["f0", "f1"], axis=3, num_outputs=2),
    h.make_node("Split", ["f0"], ["f00", "f01"], axis=5, num_outputs=2),
    h.make_node("Split", ["f1"], ["f10", "f11"], axis=5, num_outputs=2),
    h.make_node("Sub", ["one", "f00"], ["n00"]),
    h.make_node("Mul", ["f01", "n00"], ["w01"]),
    h.make_node("Add", ["f00", "w01"], ["t1"]),
    h.make_node("Sub", ["one", "t1"], ["n1"]),
    h.make_node("Mul", ["f10", "n1"], ["w10"]),
    h.make_node("Add", ["t1", "w10"], ["t2"]),
    h.make_node("Sub", ["one", "t2"], ["n2"]),
    h.make_node("Mul", ["f11", "n2"], ["w11"]),
    h.make_node("Concat", ["f00", "w01"], ["row0"], axis=5),
    h.make_node("Concat", ["w10", "w11"], ["row1"], axis=5),
    h.make_node("Concat", ["row0", "row1"], ["win"], axis=3),
    h.make_node("Mul", ["win", "rr"], ["rxr"]),
    h.make_node("Reshape", ["rxr", "s4"], ["rx"]),
]
Cm = model(
    nodes,
    {
        "s6": i64(N, C, Ho, 2, Wo, 2),
        "s6y": i64(N, C, Ho, 1, Wo, 1),
        "one": np.array(1.0, np.float32),
        "s4": i64(N, C, H, W),
    },
)
rng = np.random.default_rng(0)
x = np.maximum(rng.standard_normal((N, C, H, W)).astype(np.float32), 0)  # ReLU-like: ties at 0
x[:, :, 0:8, 0:8] = 1.0  # ties of positive values
r = rng.standard_normal((N, C, Ho, Wo)).astype(np.float32)
o = ort.SessionOptions()
o.intra_op_num_threads = 2
S = {
    k: ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])
    for k, m in (("A", A), ("B", B), ("C", Cm))
}
out = {k: s.run(None, {"x": x, "r": r})[0] for k, s in S.items()}
print("B==A", np.array_equal(out["B"], out["A"]), "C==A", np.array_equal(out["C"], out["A"]))
t = {k: [] for k in S}
for _ in range(5):
    for k, s in S.items():
        a = time.perf_counter()
        s.run(None, {"x": x, "r": r})
        t[k].append(time.perf_counter() - a)
for k in t:
    print(k, f"{np.median(t[k]) * 1e3:.0f} ms")
