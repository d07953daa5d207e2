"""Small ONNX models built by hand for the compiler tests (opset 17, IR 8, dynamic batch)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "net", inputs, outputs, [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def tensor(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def small_cnn(seed=0, bias=True, softmax=True, opset=17) -> onnx.ModelProto:
    """Conv-Relu-MaxPool-Conv-Relu-Flatten-Gemm-Relu-Gemm[-Softmax] on [N, 2, 8, 8]."""
    rng = np.random.default_rng(seed)
    he = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)
    init = {"w1": he(4, 2, 3, 3), "w2": he(6, 4, 3, 3), "w3": he(16, 6 * 4 * 4).T.copy(), "w4": he(5, 16)}
    if bias:
        init.update(
            b1=rng.normal(0, 0.1, 4).astype(np.float32),
            b2=rng.normal(0, 0.1, 6).astype(np.float32),
            b3=rng.normal(0, 0.1, 16).astype(np.float32),
            b4=rng.normal(0, 0.1, 5).astype(np.float32),
        )
    b = lambda n: [n] if bias else []
    nodes = [
        helper.make_node("Conv", ["x", "w1", *b("b1")], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", *b("b2")], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", *b("b3")], ["g1"], name="fc1"),
        helper.make_node("Relu", ["g1"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "w4", *b("b4")], ["logits"], name="fc2", transB=1),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1))
        out = "probs"
    return make_model(nodes, [tensor("x", ["batch", 2, 8, 8])], [tensor(out, ["batch", 5])], init, opset)


def saved_and_compiled(folder, model: onnx.ModelProto, rule: str):
    """(FOLDER/source.onnx holding `model`, FOLDER/e.onnx compiled from it with `rule`)."""
    import lrpc

    source, path = folder / "source.onnx", folder / "e.onnx"
    onnx.save(model, source)
    lrpc.compile(source, rule=rule, output=path)
    return source, path
