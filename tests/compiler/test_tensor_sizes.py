"""Tensor sizes at a batch (lrpc/tensor_sizes.py) where a shape is computed through ops onnx's shape
inference takes no values from: the sizes are checked against onnxruntime running the graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from lrpc.memory_floor import memory_floor
from lrpc.tensor_sizes import tensor_sizes
from nets import make_model, tensor

I64 = TensorProto.INT64


def class_token_and_flat_scatter() -> onnx.ModelProto:
    """A ViT export's class token, cls [1,1,4] expanded to Where(shape == -1, 1, shape) with shape = [N,-1,-1],
    joined to x [N,3,4]; and a max pool's flat relevance buffer, ConstantOfShape(Reshape(Size(x), [-1]))."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"]),
        helper.make_node("Unsqueeze", ["n", "zeros1"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_ones"], ["target"], axis=0),
        helper.make_node("Equal", ["target", "minus_one"], ["free"]),
        helper.make_node("Where", ["free", "ones3", "target"], ["expand_to"]),
        helper.make_node("Expand", ["cls", "expand_to"], ["tokens"]),
        helper.make_node("Concat", ["tokens", "x"], ["joined"], axis=1),
        helper.make_node("Size", ["x"], ["count"]),
        helper.make_node("Reshape", ["count", "minus_one"], ["count1"]),
        helper.make_node("ConstantOfShape", ["count1"], ["flat"]),
    ]
    constants = {
        "zero": np.array(0, np.int64),
        "zeros1": np.array([0], np.int64),
        "minus_ones": np.array([-1, -1], np.int64),
        "minus_one": np.array([-1], np.int64),
        "ones3": np.ones(3, np.int64),
        "cls": np.arange(4, dtype=np.float32).reshape(1, 1, 4),
    }
    outputs = [tensor("joined", ["n", None, 4]), tensor("flat", [None])]
    return make_model(nodes, [tensor("x", ["n", 3, 4])], outputs, constants)


def test_shapes_computed_through_where_and_size_are_sized_as_onnxruntime_makes_them():
    model = class_token_and_flat_scatter()
    before = model.SerializeToString()
    x = np.zeros((5, 3, 4), np.float32)
    joined, flat = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    sizes = tensor_sizes(model, 5)
    assert sizes["tokens"] == 5 * 1 * 4 * 4
    assert sizes["joined"] == joined.nbytes == 5 * 4 * 4 * 4
    assert sizes["flat"] == flat.nbytes == 5 * 12 * 4
    assert model.SerializeToString() == before  # the caller's model is not touched
    floor = memory_floor(model, 5)
    assert floor.unknown == []
    assert floor.kept == x.nbytes + joined.nbytes + flat.nbytes  # x, held by the caller, and both outputs


def test_a_data_dependent_shape_stays_unknown():
    model = class_token_and_flat_scatter()
    model.graph.node.append(helper.make_node("NonZero", ["x"], ["nz"]))
    model.graph.output.append(tensor("nz", [3, None], I64))
    sizes = tensor_sizes(model, 2)
    assert "nz" not in sizes and sizes["joined"] == 2 * 4 * 4 * 4


def test_initializers_whose_data_lies_in_another_file_are_sized_from_their_dims(tmp_path):
    model = class_token_and_flat_scatter()
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((2, 3), np.float32), "unused_weight"))
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0)
    stored = onnx.load(path, load_external_data=False)  # as the floor reads a file: data not loaded
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    sizes = tensor_sizes(stored, 5, str(tmp_path))  # the shape constants read from model.onnx's data file
    assert sizes["unused_weight"] == 24 and sizes["joined"] == 5 * 4 * 4 * 4 and sizes["flat"] == 5 * 12 * 4
    assert memory_floor(path, 5).unknown == []  # from a path, the data file is found beside it
    blind = tensor_sizes(stored, 5)  # no folder: the constants' values are unknown, their dims are not
    assert blind["unused_weight"] == 24 and "flat" not in blind


def test_a_large_computed_tensor_is_sized_without_being_evaluated(monkeypatch):
    import lrpc.tensor_sizes as tensor_sizes_module

    evaluated = []
    real = tensor_sizes_module.ReferenceEvaluator

    def recording(node, **kwargs):
        evaluated.append(node.op_type)
        return real(node, **kwargs)

    monkeypatch.setattr(tensor_sizes_module, "ReferenceEvaluator", recording)
    sizes = tensor_sizes(class_token_and_flat_scatter(), 500)  # flat: 6000 elements, over the 4096 evaluated
    assert sizes["flat"] == 500 * 12 * 4 and sizes["joined"] == 500 * 4 * 4 * 4
    assert "Where" in evaluated and "ConstantOfShape" not in evaluated  # tokens, 2000 elements, may be
