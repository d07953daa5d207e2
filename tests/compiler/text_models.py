"""Small hand-built text models for the token-input tests (onnx.helper, opset 17, float32 weights).

classifier: ids [batch, seq] → Gather(E) → (× mask) → ReduceMean over seq → MatMul W (+ bias) → [batch, classes]
lm_head:    ids [batch, seq] → Gather(E) → Tanh → MatMul W → logits [batch, seq, vocab]
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "text", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def classifier(vocab=11, hidden=5, classes=3, seed=0, mask=False, bias=False, second_table=False, position=False):
    """The model and its weights; `second_table` adds a second lookup of the same ids (summed), `position` a
    position embedding looked up from Range(0, seq) (no input: it takes no relevance)."""
    rng = np.random.default_rng(seed)
    w = {"E": rng.standard_normal((vocab, hidden)), "W": rng.standard_normal((hidden, classes))}
    nodes = [helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed", axis=0)]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])]
    x = "emb"
    if second_table:
        w["E2"] = rng.standard_normal((vocab, hidden))
        nodes += [
            helper.make_node("Gather", ["E2", "ids"], ["emb2"], name="embed2", axis=0),
            helper.make_node("Add", [x, "emb2"], ["emb_sum"], name="add_tables"),
        ]
        x = "emb_sum"
    consts = {}
    if position:
        w["P"] = rng.standard_normal((16, hidden))
        consts.update(
            zero=np.array(0, np.int64),
            one=np.array(1, np.int64),
            idx=np.array([1], np.int64),
            zero1=np.array([0], np.int64),
        )
        nodes += [
            helper.make_node("Shape", ["ids"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["seq_len"], axis=0),
            helper.make_node("Range", ["zero", "seq_len", "one"], ["steps"]),
            helper.make_node("Gather", ["P", "steps"], ["pos"], name="position_embed", axis=0),
            helper.make_node("Add", [x, "pos"], ["emb_pos"], name="add_position"),
        ]
        x = "emb_pos"
    if mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]))
        consts["last"] = np.array([2], np.int64)
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "last"], ["mask3"]),
            helper.make_node("Mul", [x, "mask3"], ["masked"], name="apply_mask"),
        ]
        x = "masked"
    nodes += [
        helper.make_node("ReduceMean", [x], ["pooled"], name="mean", axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["logits0" if bias else "logits"], name="head"),
    ]
    if bias:
        w["b"] = rng.standard_normal(classes)
        nodes.append(helper.make_node("Add", ["logits0", "b"], ["logits"], name="head_bias"))
    w = {k: v.astype(np.float32) for k, v in w.items()}
    inits = [numpy_helper.from_array(v, k) for k, v in {**w, **consts}.items()]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])]
    return _model(nodes, inputs, outputs, inits), w


def lm_head(vocab=13, hidden=4, seed=0, seq="seq"):
    rng = np.random.default_rng(seed)
    w = {
        "E": rng.standard_normal((vocab, hidden)).astype(np.float32),
        "W": rng.standard_normal((hidden, vocab)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed", axis=0),
        helper.make_node("Tanh", ["emb"], ["h"], name="act"),
        helper.make_node("MatMul", ["h", "W"], ["logits"], name="lm_head"),
    ]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", seq])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", seq, vocab])]
    return _model(nodes, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in w.items()]), w


def one_hot_model(vocab=7, classes=2):
    """ids → OneHot → MatMul: the ids are not looked up, so lrpc refuses them."""
    depth, values = np.array(vocab, np.int64), np.array([0, 1], np.float32)
    W = np.ones((vocab, classes), np.float32)
    nodes = [
        helper.make_node("OneHot", ["ids", "depth", "values"], ["hot"], name="encode", axis=-1),
        helper.make_node("ReduceMean", ["hot"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(depth, "depth"),
        numpy_helper.from_array(values, "values"),
        numpy_helper.from_array(W, "W"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
