"""Broken models that the mutation fuzzer (tests/fuzz) found crashing lrpc, minimized to one change of
the small CNN of nets.py. Each must raise one LrpcError naming the problem — not a TypeError, ValueError,
IndexError or ZeroDivisionError from deep inside, nor "internal error: the explained graph fails the
ONNX checker" (which blames lrpc for the model's fault), nor compile into a file onnxruntime cannot run.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper

import lrpc
from lrpc.passes import prepare
from nets import make_model, small_cnn, tensor


def mutated(change) -> onnx.ModelProto:
    model = small_cnn(softmax=False)
    change(model)
    return model


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def set_attribute(model, name, attribute, value):
    n = node(model, name)
    kept = [a for a in n.attribute if a.name != attribute]
    del n.attribute[:]
    n.attribute.extend(kept + [helper.make_attribute(attribute, value)])


def cycle(m):
    node(m, "conv1").input[0] = "logits"


CASES = {  # was → now
    # TopologicalSortPass: ValueError "Graph contains a cycle"
    "a cycle": (cycle, "not valid ONNX: Graph contains a cycle"),
    # onnx_ir's shape inference logged the error and went on; the rules then built on unknown types
    "a dangling input": (lambda m: node(m, "relu1").input.__setitem__(0, "nowhere"), "not valid ONNX"),
    # "internal error: … Unrecognized attribute: strides for operator Gemm"
    "an attribute the op does not have": (
        lambda m: set_attribute(m, "fc1", "strides", [2, 2]),
        "not valid ONNX: Unrecognized attribute: strides for operator Gemm",
    ),
    # ZeroDivisionError in rules/linear.py's adjoint kernel
    "group 0": (lambda m: set_attribute(m, "conv1", "group", 0), "'conv1' (Conv): group=0; ONNX needs group ≥ 1"),
    # "internal error: … Input channels C must be divisible by group for ConvTranspose"
    "group 7 on 2 channels": (
        lambda m: set_attribute(m, "conv1", "group", 7),
        "its input has 2 channels, but its weight [4, 2, 3, 3] with group=7 takes 14",
    ),
    # compiled into a file whose Conv fails in onnxruntime ("Input channels C is not equal to kernel channels")
    "the input declared with 5 channels": (
        lambda m: m.graph.input[0].type.tensor_type.shape.dim[1].__setattr__("dim_value", 5),
        "its input has 5 channels, but its weight [4, 2, 3, 3] with group=1 takes 2",
    ),
    # compiled; the file kept auto_pad="BOGUS" and onnxruntime refused it
    "an unknown auto_pad": (lambda m: set_attribute(m, "pool1", "auto_pad", "BOGUS"), "auto_pad='BOGUS'; ONNX knows"),
    # compiled into a file onnxruntime refuses at load ("raw_data size (288 bytes) does not match expected size
    # from shape and data type (216 bytes)"); the checker sees data too short for its dims, not too long
    "an initializer's dims shrunk": (
        lambda m: m.graph.initializer[0].dims.__setitem__(0, 3),
        "initializer 'w1' holds 288 bytes, but its dims [3, 2, 3, 3] of FLOAT take 216",
    ),
    # "internal error: … (Gemm): Dimension mismatch in unification": the rule's transposed pass used 1 − transB
    "transB 2": (lambda m: set_attribute(m, "fc2", "transB", 2), "'fc2' (Gemm): transB=2; ONNX takes 0 or 1"),
    # IndexError in select.find_output
    "no outputs": (lambda m: m.graph.ClearField("output"), "the model has no outputs"),
    # "internal error: … input 'logits' of node lrp/start/ArgMax_1 is not output of any previous nodes"
    "no nodes": (lambda m: m.graph.ClearField("node"), "not valid ONNX: Graph output 'logits' is not an output"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_broken_model_gets_one_clear_error(case):
    change, message = CASES[case]
    with pytest.raises(lrpc.LrpcError, match=re.escape(message)):
        lrpc.compile(mutated(change))


def conv_gap(w, **attributes) -> onnx.ModelProto:
    """x [n, 2, 2, 8] → Conv(w) → GlobalAveragePool → Flatten, unchecked: onnx's shape inference passes these
    broken Convs, since no later layer has a size that could disagree."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **attributes),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [tensor("x", ["n", 2, 2, 8])],
        [tensor("y", ["n", 4])],
        [onnx.numpy_helper.from_array(w.astype(np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


CONV_CASES = {  # was → now
    # "internal error: … ConvTranspose: Attribute output_padding must not contain negative values" (onnx's
    # shape inference gives the Conv an output of height 1, onnxruntime refuses to run it)
    "an input smaller than the kernel": (
        conv_gap(np.ones((4, 2, 3, 3)), kernel_shape=[3, 3]),
        "'conv' (Conv): its window (kernel [3, 3], dilations [1, 1]) is larger than "
        "its input [2, 8] with pads [0, 0, 0, 0]",
    ),
    # "internal error: … (Div): Incompatible dimensions" (the rules take the kernel from the weight)
    "kernel_shape not the weight's": (
        conv_gap(np.ones((4, 2, 1, 1)), kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
        "'conv' (Conv): kernel_shape=[3, 3], but its weight has shape [4, 2, 1, 1]",
    ),
    # ValueError "min() arg is an empty sequence" in geometry.adjoint_conv_geometry (a kernel of no axes)
    "a weight of rank 2": (
        conv_gap(np.ones((4, 2)), kernel_shape=[1, 1], auto_pad="SAME_UPPER"),
        "'conv' (Conv): its weight has shape [4, 2], of rank 2, for an input of rank 4",
    ),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_a_broken_conv_gets_one_clear_error(case):
    model, message = CONV_CASES[case]
    with pytest.raises(lrpc.LrpcError, match=re.escape(message)):
        lrpc.compile(model)


def test_unnamed_nodes_give_a_file_onnxruntime_loads():
    """Found by a long fuzz run on a graph whose nodes have no names: canonization named each new node after
    its source — "AveragePool", "batchnorm", "affine" for unnamed ones — so two unnamed average pools (or
    BatchNorms, or MatMul + Add pairs) gave two nodes of one name and onnxruntime refused the file
    ("two nodes with same node name"). A named pool keeps its name."""
    rng = np.random.default_rng(0)
    bn = [np.abs(rng.standard_normal(2)).astype(np.float32) + 0.5 for _ in range(4)]
    nodes = [
        helper.make_node("AveragePool", ["x"], ["p1"], kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["p1"], ["p2"], kernel_shape=[2, 2]),
        helper.make_node("AveragePool", ["p2"], ["p3"], name="pool", kernel_shape=[1, 1]),
        helper.make_node("BatchNormalization", ["p3", "g", "b", "m", "v"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("BatchNormalization", ["r1", "g", "b", "m", "v"], ["n2"]),
        helper.make_node("Flatten", ["n2"], ["f"]),
        helper.make_node("MatMul", ["f", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["a1"]),
        helper.make_node("MatMul", ["a1", "w2"], ["k"]),
        helper.make_node("Add", ["k", "b2"], ["y"]),
    ]
    init = dict(
        zip("gbmv", bn),
        w1=rng.standard_normal((2 * 5 * 5, 3)).astype(np.float32),
        b1=np.ones(3, np.float32),
        w2=rng.standard_normal((3, 2)).astype(np.float32),
        b2=np.ones(2, np.float32),
    )
    model = make_model(nodes, [tensor("x", ["n", 2, 5, 5])], [tensor("y", ["n", 2])], init)
    explained = lrpc.compile(model, rule="epsilon")
    names = [n.name for n in explained.graph.node if n.name]
    assert len(names) == len(set(names)) and "pool" in names
    sess = ort.InferenceSession(explained.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(sess.run(None, {"x": np.ones((2, 2, 5, 5), np.float32)})[-1]).all()


def test_the_validation_keeps_valid_models_and_sorts_unsorted_ones():
    """An unsorted but otherwise valid graph (nodes in reverse order) is sorted, then checked: it compiles."""
    model = small_cnn(softmax=False)
    nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    m = ir.serde.deserialize_model(model)
    prepare(m)
    assert [n.name for n in m.graph][0] == "conv1"
    out = lrpc.compile(model)
    assert out.graph.output[-1].name == "relevance"


def two_producers(m):
    node(m, "conv2").output[0] = "c1"


def undecodable_attribute_name(model):
    return model.SerializeToString().replace(b"pads", b"\xffads", 1)


def test_a_value_with_two_producers_gets_a_clear_error():
    with pytest.raises(lrpc.LrpcError, match="not valid ONNX: ValueError: Output 'c1' is redeclared"):
        lrpc.compile(mutated(two_producers))


def test_an_undecodable_attribute_name_gets_a_clear_error():
    with pytest.raises(lrpc.LrpcError, match="not valid ONNX: TypeError"):
        lrpc.compile(undecodable_attribute_name(small_cnn(softmax=False)))


def test_nonfinite_weights_compile_into_a_file_that_runs():
    """NaN weights are the model's own values, not a broken file: lrpc compiles them unchanged."""
    model = small_cnn(softmax=False)
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    w.reshape(-1)[0] = np.nan
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, model.graph.initializer[0].name))
    onnx.checker.check_model(lrpc.compile(model), full_check=True)


def test_the_cli_prints_one_line_for_a_model_without_nodes(tmp_path):
    (tmp_path / "in.onnx").write_bytes(mutated(lambda m: m.graph.ClearField("node")).SerializeToString())
    done = subprocess.run(
        [sys.executable, "-m", "lrpc.cli", "compile", "in.onnx", "-o", "out.onnx"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and not (tmp_path / "out.onnx").exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrpc: error: "), done.stderr
