"""Determinism (issue 10, item 5): the same model and options give the same bytes, and the same input the
same relevance.

- Files: two compiles in one process, and one in each of two fresh interpreters with different
  PYTHONHASHSEED (so no set or dict order that depends on string hashing can leak into node order,
  names or metadata), give byte-identical explained files for LRP rules, composites, a per-call target
  and the gradient methods, smoothgrad with its seeded in-graph noise included.
- Runs: the same file and input give bit-identical outputs and relevance across runs of one session and
  across sessions (same session options). Smoothgrad draws its noise with onnxruntime's RandomNormalLike
  and a fixed seed: each new session repeats the same sequence of draws, so run k of one session equals
  run k of another; successive runs of one session draw new noise and differ (the README's "each new
  session repeats the sequence").

The model: a CNN with a residual Add, a Concat, a MaxPool and an AveragePool with a border divisor map
(count_include_pad=0), so the canonization passes and the routing rules take part.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import lrpc
from nets import make_model, tensor

SPECS = {
    "epsilon": dict(rule="epsilon"),
    "alpha2beta1, target input": dict(rule="alpha2beta1", target="input"),
    "EpsilonPlusFlat": dict(composite="EpsilonPlusFlat"),
    "EpsilonGammaBox": dict(composite="EpsilonGammaBox:low=-1,high=1"),
    "w2 on first, mask": dict(rule="zplus", rule_map=["first=w2"], target="mask"),
    "gradient": dict(method="gradient"),
    "integratedgradients": dict(method="integratedgradients:steps=4"),
    "smoothgrad": dict(method="smoothgrad:samples=4,noise=0.2,seed=3"),
}
X = np.random.default_rng(1).standard_normal((3, 2, 6, 6)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = lambda *shape: (rng.standard_normal(shape) * 0.4).astype(np.float32)
    # w3 ≥ 0 so that z⁺ has contributions to pass back: with a signed w3 this seed's z⁺ relevance vanished at the
    # average pool (as the float64 oracle's does), and a test of identical zeros would say little
    init = {"w1": w(4, 2, 3, 3), "b1": w(4), "w2": w(4, 4, 3, 3), "w3": np.abs(w(2, 8, 1, 1)), "w4": w(2 * 3 * 3, 5)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a"], name="residual"),
        helper.make_node("MaxPool", ["a"], ["m"], name="maxpool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["m", "r1"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["c3"], name="conv3"),
        helper.make_node(
            "AveragePool",
            ["c3"],
            ["p"],
            name="avgpool",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            count_include_pad=0,
        ),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w4"], ["logits"], name="dense"),
    ]
    return make_model(nodes, [tensor("x", ["batch", 2, 6, 6])], [tensor("logits", ["batch", 5])], init)


def compiled_bytes(name: str) -> bytes:
    return lrpc.compile(model(), **SPECS[name]).SerializeToString()


def feeds(proto_bytes: bytes) -> dict:
    names = {i.name for i in onnx.load_from_string(proto_bytes).graph.input}
    extra = {"target": np.array([4, 0, 2], np.int64), "mask": np.linspace(0, 1, 15, dtype=np.float32).reshape(3, 5)}
    return {"x": X} | {k: v for k, v in extra.items() if k in names}


def session(proto_bytes: bytes, threads: int = 1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(proto_bytes, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", SPECS)
def test_two_compiles_in_one_process_give_the_same_bytes(name):
    first = compiled_bytes(name)
    assert compiled_bytes(name) == first
    assert lrpc.compile(onnx.load_from_string(model().SerializeToString()), **SPECS[name]).SerializeToString() == first


FRESH = """
import json, sys
import lrpc
specs = json.loads(sys.argv[2])
for name, kwargs in specs.items():
    with open(sys.argv[3] + "/" + str(list(specs).index(name)) + ".onnx", "wb") as f:
        f.write(lrpc.compile(sys.argv[1], **kwargs).SerializeToString())
"""


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_a_fresh_interpreter_gives_the_same_bytes(tmp_path, hash_seed):
    import json

    path = tmp_path / "model.onnx"
    onnx.save(model(), path)
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    done = subprocess.run(
        [sys.executable, "-c", FRESH, str(path), json.dumps(SPECS), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for i, name in enumerate(SPECS):
        assert (tmp_path / f"{i}.onnx").read_bytes() == lrpc.compile(str(path), **SPECS[name]).SerializeToString(), (
            f"{name}: a fresh interpreter (PYTHONHASHSEED={hash_seed}) wrote other bytes"
        )


@pytest.mark.parametrize("name", [n for n in SPECS if n != "smoothgrad"])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_same_input_gives_the_same_relevance(name, threads):
    data = compiled_bytes(name)
    runs = [s.run(None, feeds(data)) for s in (session(data, threads), session(data, threads)) for _ in range(2)]
    relevance = runs[0][-1]
    assert np.isfinite(relevance).all() and np.abs(relevance).sum() > 0
    for outputs in runs[1:]:
        for got, first in zip(outputs, runs[0]):
            np.testing.assert_array_equal(got, first)


def test_smoothgrad_repeats_its_noise_in_each_new_session():
    data = compiled_bytes("smoothgrad")
    one, two = session(data), session(data)
    first = [one.run(None, feeds(data))[-1] for _ in range(2)]
    second = [two.run(None, feeds(data))[-1] for _ in range(2)]
    np.testing.assert_array_equal(first[0], second[0])  # run 1 of each new session: the same draws
    np.testing.assert_array_equal(first[1], second[1])  # run 2 likewise
    assert not np.array_equal(first[0], first[1]), "successive runs of one session draw new noise"
    other_seed = lrpc.compile(model(), method="smoothgrad:samples=4,noise=0.2,seed=4").SerializeToString()
    assert not np.array_equal(session(other_seed).run(None, feeds(other_seed))[-1], first[0])
