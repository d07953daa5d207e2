"""The SavedModel table's self-gated activations and norms (compiler/savedmodel/norms.py) against
onnxruntime on single-node graphs, each at the opset that defines the op; and an explained modern
block (SiLU, a squeeze-excitation gate, LayerNorm, GELU) exported whole, against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
from onnx import TensorProto

from lrpc.savedmodel import build_module
from test_savedmodel_ops import const, data, rand, single_node_model

INT8, UINT8 = TensorProto.INT8, TensorProto.UINT8
CASES = [  # (op, inputs, attributes, opset[, output type]: float unless given)
    ("HardSwish", [data(4 * rand(2, 3, 5))], {}, 17),
    ("Gelu", [data(3 * rand(2, 3, 5))], {}, 20),
    ("Gelu", [data(3 * rand(2, 3, 5))], {"approximate": "tanh"}, 20),
    ("Mish", [data(3 * rand(2, 3, 5))], {}, 18),
    ("Swish", [data(3 * rand(2, 3, 5))], {"alpha": 1.702}, 24),
    ("Softsign", [data(3 * rand(2, 3, 5))], {}, 17),
    ("LayerNormalization", [data(rand(2, 3, 6)), const(rand(6)), const(rand(6))], {"epsilon": 1e-3}, 17),
    ("LayerNormalization", [data(rand(2, 3, 4, 5)), const(rand(4, 5))], {"axis": -2}, 17),
    ("InstanceNormalization", [data(rand(2, 3, 4, 5)), const(rand(3)), const(rand(3))], {"epsilon": 1e-4}, 17),
    ("LayerNormalization", [data(rand(2, 3, 4, 5)), const(rand(3, 4, 5)), const(rand(3, 4, 5))], {"axis": 1}, 17),
    ("InstanceNormalization", [data(rand(2, 3, 7)), const(rand(3)), const(rand(3))], {}, 17),
    ("GroupNormalization", [data(rand(2, 4, 3, 5)), const(rand(4)), const(rand(4))], {"num_groups": 1}, 21),
    ("GroupNormalization", [data(rand(2, 4, 3, 5)), const(rand(4)), const(rand(4))], {"num_groups": 2}, 21),
    ("GroupNormalization", [data(rand(2, 6, 3, 5)), const(rand(3)), const(rand(3))], {"num_groups": 3}, 18),
    ("QuantizeLinear", [data(40 * rand(2, 3, 5)), const(np.float32(0.7)), const(np.int8(3))], {}, 17, INT8),
    ("QuantizeLinear", [data(40 * rand(2, 3, 5)), const(np.float32(0.5)), const(np.uint8(128))], {}, 17, UINT8),
    (
        "QuantizeLinear",
        [data(40 * rand(2, 3, 5)), const(np.array([0.5, 0.25, 1.0], np.float32)), const(np.array([1, -2, 0], np.int8))],
        {"axis": 1},
        17,
        INT8,
    ),
    (
        "DequantizeLinear",
        [data(np.arange(-15, 15, dtype=np.int8).reshape(2, 3, 5)), const(np.float32(0.3)), const(np.int8(2))],
        {},
        17,
    ),
    (
        "DequantizeLinear",
        [
            data(np.arange(30, dtype=np.uint8).reshape(2, 3, 5)),
            const(np.array([0.5, 0.25, 1.0], np.float32)),
            const(np.array([1, 2, 0], np.uint8)),
        ],
        {"axis": 1},
        17,
    ),
]


CASES = [(*c, TensorProto.FLOAT) if len(c) == 4 else c for c in CASES]


@pytest.mark.parametrize("op, inputs, attrs, opset, out", CASES, ids=[f"{c[0]}-{c[3]}-{c[2]}"[:60] for c in CASES])
def test_op_matches_onnxruntime(op, inputs, attrs, opset, out):
    model, feeds = single_node_model(op, inputs, [out], attrs)
    model.opset_import[0].version = opset
    model.ir_version = 10
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    module, names = build_module(tf, model)
    got = module.serve(*[tf.constant(feeds[v.name]) for v in model.graph.input])[names["outputs"]["out0"]].numpy()
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype.kind == "f":
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    else:
        np.testing.assert_array_equal(got, want)


def test_explained_modern_block_matches_onnxruntime():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "compiler"))
    import lrpc
    import test_rules_gates_norms as modern

    for name in ("se_half", "layernorm", "layernorm_decomposed", "rmsnorm", "gelu_tanh"):
        net, out = modern.CASES.net(name)
        proto = lrpc.compile(net.model(out), rule="epsilon", rule_map=["product=half"] if name == "se_half" else ())
        x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
        want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        module, names = build_module(tf, proto)
        got = module.serve(tf.constant(x))
        for i, value in enumerate(proto.graph.output):
            actual = got[names["outputs"][value.name]].numpy()
            assert np.abs(actual - want[i]).max() <= 1e-4 * np.abs(want[i]).max(), (name, value.name)
