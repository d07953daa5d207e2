"""The ε stabiliser's sign: Builder.sign_shift is bit for bit ε·sign₀(z) = where(z ≥ 0, ε, −ε); and the
ReLU's derivative: Builder.positive_mask is bit for bit [v > 0].

Checked in onnxruntime against numpy on the values where a scaled clip could go wrong: ±0, the smallest
subnormals, the largest finite floats, ±inf, and ε from 1e-12 (AttnLRP) to 1 (one scale factor or two).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import oracle
from lrpc.builder import Builder

DTYPES = [(np.float32, ir.DataType.FLOAT), (np.float64, ir.DataType.DOUBLE)]


def edge_values(dtype) -> np.ndarray:
    info = np.finfo(dtype)
    tiny = info.smallest_subnormal
    magnitudes = [0.0, tiny, 2 * tiny, 3 * tiny, info.tiny, 1e-30, 1e-12, 1e-7, 0.5, 1.0, 3e4, info.max, np.inf]
    values = np.array(magnitudes, dtype=dtype)
    rng = np.random.default_rng(0)
    spread = rng.standard_normal(64) * 10.0 ** rng.integers(-40, 30, 64)
    with np.errstate(over="ignore"):  # float16: the large ones become ±inf, also edge values
        return np.concatenate([values, -values, spread.astype(dtype)])


def run_built(ir_type, make, z, *others):
    """(output, op types) of `make(builder, z, *others)`, a graph on the inputs z, …, run in onnxruntime."""
    graph = ir.Graph([], [], nodes=[], name="g", opset_imports={"": 17})
    feeds = {f"x{k}": v for k, v in enumerate((z, *others))}
    values = [ir.Value(name=n, type=ir.TensorType(ir_type), shape=ir.Shape(v.shape)) for n, v in feeds.items()]
    graph.inputs.extend(values)
    graph.outputs.append(make(Builder(graph, ir_type), *values))
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=8))
    return oracle.session(proto).run(None, feeds)[0], {n.op_type for n in graph}


def run_shift(dtype, ir_type, eps, z):
    return run_built(ir_type, lambda b, v: b.sign_shift(v, eps), z)[0]


@pytest.mark.parametrize("eps", [1e-12, 1e-7, 2.4e-7, 1e-6, 0.25, 1.0])
@pytest.mark.parametrize("dtype,ir_type", DTYPES, ids=["float32", "float64"])
def test_sign_shift_is_where_bit_for_bit(dtype, ir_type, eps):
    z = edge_values(dtype)
    e = dtype(eps)
    expected = np.where(z >= 0, e, -e).astype(dtype)
    got = run_shift(dtype, ir_type, eps, z)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)
    assert np.array_equal(np.signbit(got), np.signbit(expected))  # -0.0 gets +ε


def test_sign_shift_keeps_nan():
    got = run_shift(np.float32, ir.DataType.FLOAT, 1e-6, np.array([np.nan], np.float32))
    assert np.isnan(got).all()  # stab(NaN) is NaN either way: NaN + ε·anything


def test_no_two_constant_factors_stand_next_to_each_other():
    """ε = 1e-6 needs K = 2¹³² in float32, past its largest power of two: the second factor scales the
    clipped value, not z·2¹²⁷ — TensorFlow's Grappler folded Mul(Mul(z, 2¹²⁷), 2⁵) into z·inf (NaN at
    z = 0) in the SavedModel (benchmarks/KERAS_VERIFY.md)."""
    import lrpc
    from nets import small_cnn

    # Zennit's start relevance w is no product z ⊙ c, so the top layer's quotient has a sign test
    graph = lrpc.compile(small_cnn(bias=False), rule="epsilon:eps=1e-6", convention="zennit").graph
    constants = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    scaled = [n for n in graph.node if n.op_type == "Mul" and any(i in constants for i in n.input)]
    assert scaled
    for node in scaled:
        inner = [producer.get(i) for i in node.input if i not in constants]
        assert not any(p is not None and p.op_type == "Mul" and any(i in constants for i in p.input) for p in inner), (
            node.name
        )


@pytest.mark.parametrize(
    "dtype,ir_type", DTYPES + [(np.float16, ir.DataType.FLOAT16)], ids=["float32", "float64", "float16"]
)
def test_positive_mask_is_the_step_bit_for_bit(dtype, ir_type):
    v = edge_values(dtype)
    got = run_built(ir_type, lambda b, x: b.positive_mask(x), v)[0]
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.abs(got), (v > 0).astype(dtype))  # 1 for every v > 0, ±0 elsewhere
    assert np.isnan(run_built(ir_type, lambda b, x: b.positive_mask(x), np.array([np.nan], dtype))[0]).all()


def test_a_relu_gradient_multiplies_by_the_mask_of_its_output():
    """The plain gradient through Conv + Relu reads the Relu's output, so onnxruntime keeps them fused,
    and no Where (5× a Mul in onnxruntime 1.31) is left in the file."""
    import lrpc
    from nets import small_cnn

    graph = lrpc.compile(small_cnn(bias=False), method="gradient").graph
    relu_outputs = {n.output[0] for n in graph.node if n.op_type == "Relu"}
    conv_outputs = {n.output[0] for n in graph.node if n.op_type == "Conv"}
    readers = [n for n in graph.node if n.op_type != "Relu" and set(n.input) & conv_outputs]
    assert relu_outputs and not readers, [n.name for n in readers]
    assert not [n for n in graph.node if n.op_type == "Where"]


@pytest.mark.parametrize("eps", [1e-12, 1e-6, 0.25])
def test_a_quotient_of_z_times_c_skips_the_sign_test(eps):
    """divide(z ⊙ c, z) = c ⊙ |z| / (|z| + ε): the quotient R / stab(z) within float rounding (0 where z = 0),
    built without sign_shift's Clip."""
    z = edge_values(np.float32)
    z = z[np.isfinite(z) & (np.abs(z) < 1e30)]
    c = np.random.default_rng(1).standard_normal(z.shape).astype(np.float32)
    got, ops = run_built(ir.DataType.FLOAT, lambda b, zv, cv: b.divide(b.op("Mul", zv, cv), zv, eps), z, c)
    assert "Clip" not in ops
    z64, c64 = z.astype(np.float64), c.astype(np.float64)
    want = z64 * c64 / (z64 + np.float32(eps) * np.where(z64 >= 0, 1.0, -1.0))
    tiny = np.finfo(np.float32).smallest_subnormal
    np.testing.assert_allclose(got, want, rtol=4e-7, atol=4 * tiny)  # subnormal quotients round to a multiple
    assert not got[z == 0].any()
