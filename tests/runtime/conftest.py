"""Fixtures for the runtime tests: tiny hand-built "explained" ONNX graphs.

The graphs follow the explained-file contract (original outputs, then one
relevance output per input, ``lrpc.*`` metadata) with trivially checkable
arithmetic instead of real LRP:

* single input ``input`` [N, 4]: ``logits = input @ W`` [N, 3],
  ``relevance = input * 2`` (or ``input * target`` in target mode "input");
* two inputs ``a`` [N, 4], ``b`` [N, 2]: ``logits = a @ WA + b @ WB``,
  ``relevance_a = a * 2``, ``relevance_b = b * 3``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
WA = np.arange(12, dtype=np.float32).reshape(4, 3) / 7.0
WB = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.0


def _metadata(model: onnx.ModelProto, target: str, relevance: dict[str, str]) -> None:
    """Attach the lrpc.* metadata_props of the contract."""
    for key, value in {
        "lrpc.version": "0.1.0",
        "lrpc.rule": "epsilon:eps=1e-06",
        "lrpc.target": target,
        "lrpc.relevance": json.dumps(relevance),
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    """Wrap a graph in a model onnxruntime 1.31 accepts (opset 17, IR 8)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_single(target: str = "max", metadata: bool = True, batch: int | str = "N") -> bytes:
    """The single-input model; ``target="input"`` adds the int64 ``target`` input."""
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 4])]
    nodes = [helper.make_node("MatMul", ["input", "W"], ["logits"])]
    inits = [numpy_helper.from_array(W, "W")]
    if target == "input":
        inputs.append(helper.make_tensor_value_info("target", TensorProto.INT64, [batch]))
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
        nodes += [
            helper.make_node("Cast", ["target"], ["target_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["target_f", "axes"], ["target_col"]),
            helper.make_node("Mul", ["input", "target_col"], ["relevance"]),
        ]
    else:
        inits.append(numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"))
        nodes.append(helper.make_node("Mul", ["input", "two"], ["relevance"]))
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3]),
        helper.make_tensor_value_info("relevance", TensorProto.FLOAT, [batch, 4]),
    ]
    model = _finish(helper.make_graph(nodes, "single", inputs, outputs, inits))
    if metadata:
        _metadata(model, target, {"input": "relevance"})
    return model.SerializeToString()


def build_double() -> bytes:
    """The two-input model (target mode "max")."""
    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
    ]
    inits = [
        numpy_helper.from_array(WA, "WA"),
        numpy_helper.from_array(WB, "WB"),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        numpy_helper.from_array(np.array(3.0, dtype=np.float32), "three"),
    ]
    nodes = [
        helper.make_node("MatMul", ["a", "WA"], ["la"]),
        helper.make_node("MatMul", ["b", "WB"], ["lb"]),
        helper.make_node("Add", ["la", "lb"], ["logits"]),
        helper.make_node("Mul", ["a", "two"], ["relevance_a"]),
        helper.make_node("Mul", ["b", "three"], ["relevance_b"]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("relevance_a", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("relevance_b", TensorProto.FLOAT, ["N", 2]),
    ]
    model = _finish(helper.make_graph(nodes, "double", inputs, outputs, inits))
    _metadata(model, "max", {"a": "relevance_a", "b": "relevance_b"})
    return model.SerializeToString()


@pytest.fixture
def single_model() -> Callable[..., bytes]:
    """Factory for the single-input model: ``single_model(target="max", metadata=True)``."""
    return build_single


@pytest.fixture
def double_model() -> bytes:
    """Serialized two-input model."""
    return build_double()


@pytest.fixture
def weights() -> dict[str, np.ndarray]:
    """The constant weights of the models: ``W`` (single), ``WA`` and ``WB`` (double)."""
    return {"W": W, "WA": WA, "WB": WB}


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator."""
    return np.random.default_rng(0)
