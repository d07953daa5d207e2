"""ConvTranspose as a linear layer under every LRP rule, against the float64 graph oracle, whose
explicit ConvTranspose matrices (oracle.layers.conv_transpose_layer) are checked against torch.

Two models per geometry: the layer alone (its flattened output are the logits) and
layer → Relu → Gemm (the layer receives a non-trivial R_out).
"""

from __future__ import annotations

import numpy as np
import pytest

import lrpc
import oracle
from oracle import graphnet
from oracle.graphnet import Cases

RULES = [r for r in oracle.RULES if r != "alpha1beta0"]

# name -> (per-sample input shape, output channels, kernel, ConvTranspose attributes)
GEOMETRIES = {
    "s2_p1_op1": ((3, 4, 4), 4, (3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    "keras_same_s2_k3": ((3, 4, 5), 4, (3, 3), dict(strides=[2, 2], pads=[0, 0, 1, 1])),  # tf2onnx "same"
    "keras_same_s2_k5": ((2, 3, 4), 3, (5, 5), dict(strides=[2, 2], pads=[1, 1, 2, 2])),
    "same_upper_s2": ((3, 4, 5), 4, (3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "same_lower_s2": ((3, 4, 5), 4, (3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    "output_shape": ((3, 4, 5), 4, (3, 3), dict(strides=[2, 2], output_shape=[8, 10])),  # odd totals
    "output_shape_wider": ((3, 4, 5), 2, (3, 3), dict(strides=[2, 2], output_shape=[10, 12])),  # total −1
    "group2_dil2": ((4, 5, 5), 6, (3, 3), dict(group=2, dilations=[2, 2], pads=[1, 2, 2, 1])),
    "depthwise_s2": ((3, 4, 4), 3, (3, 3), dict(group=3, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    "depthwise_x2_s3_dil2": (
        (3, 3, 4),
        6,
        (2, 3),
        dict(group=3, strides=[3, 2], dilations=[2, 1], output_padding=[1, 0]),
    ),
    "conv1d_s3": ((3, 6), 4, (4,), dict(strides=[3], pads=[1, 2], output_padding=[2])),
    "conv3d": ((2, 3, 3, 2), 3, (3, 2, 3), dict(strides=[2, 1, 2], pads=[1, 0, 1, 0, 1, 1])),
    "nobias_s2": ((3, 4, 4), 4, (2, 2), dict(strides=[2, 2], bias=False)),
}


def _model(shape, out_ch, kernel, attrs, chain):
    def build(g):
        y = g.conv_transpose("x", out_ch, kernel, **attrs)
        return g.gemm(g.flatten(g.relu(y)), 5) if chain else g.flatten(y)

    return shape, build


CHAIN = Cases({name: _model(*spec, chain=True) for name, spec in GEOMETRIES.items()})
ALONE = Cases({name: _model(*spec, chain=False) for name, spec in GEOMETRIES.items()})


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_layer_then_relu_gemm_matches_oracle(geometry, rule):
    CHAIN.check(geometry, rule)


@pytest.mark.parametrize("rule", ["zero", "epsilon", "alpha2beta1", "flat", "gamma", "zbox:low=-1.5,high=2"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_layer_alone_matches_oracle(geometry, rule):
    ALONE.check(geometry, rule)


@pytest.mark.parametrize("geometry", ["s2_p1_op1", "keras_same_s2_k3", "output_shape_wider", "conv1d_s3"])
def test_bias_free_layer_conserves_under_zero(geometry):
    R, _, y = CHAIN.check(geometry, "zero", batch=4, bias=False)
    np.testing.assert_allclose(R.reshape(4, -1).astype(np.float64).sum(axis=1), y.max(axis=1), rtol=1e-5)


@pytest.mark.parametrize("geometry", ["s2_p1_op1", "depthwise_x2_s3_dil2"])
def test_batch_equals_single_samples(geometry):
    sess = oracle.session(CHAIN.compiled(geometry, "gamma"))
    X = CHAIN.inputs(geometry, "gamma", 4)
    together = oracle.run(sess, X)["relevance"]
    for n in range(4):
        oracle.assert_rel_close(together[n : n + 1], oracle.run(sess, X[n : n + 1])["relevance"], 1e-6)


def test_flat_rule_keeps_depthwise_channels_apart():
    """flat on a depthwise ConvTranspose: all weights 1, but only within a channel's own group."""
    X = ALONE.inputs("depthwise_s2", "flat", 3)
    R = oracle.run(oracle.session(ALONE.compiled("depthwise_s2", "flat", target=5)), X)["relevance"]
    # target 5 is an output unit of channel 0: no relevance may reach input channels 1 and 2
    assert np.abs(R[:, 0]).sum() > 0 and np.all(R[:, 1:] == 0)


def test_output_padding_not_smaller_than_stride_is_reported():
    g = graphnet.GraphNet((2, 4, 4))
    w = g.const(np.ones((2, 2, 3, 3), np.float32))
    y = g.node("ConvTranspose", ["x", w], strides=[1, 1], dilations=[2, 2], output_padding=[1, 0])
    g.shapes[y] = (2, 9, 8)
    with pytest.raises(lrpc.LrpcError, match="output_padding"):
        lrpc.compile(g.model(g.gemm(g.flatten(y), 3)))


CASES_TORCH = [
    ((3, 4, 5), (3, 2, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1)),
    ((4, 3, 4), (4, 3, 2, 3), dict(stride=(3, 2), padding=(0, 1), output_padding=(2, 0), groups=2, dilation=(1, 2))),
    ((2, 3, 2, 3), (2, 2, 3, 2, 2), dict(stride=(1, 2, 2), padding=0, output_padding=0, groups=1, dilation=1)),
]


@pytest.mark.parametrize("in_shape, w_shape, kw", CASES_TORCH)
def test_oracle_conv_transpose_matrix_matches_torch(in_shape, w_shape, kw):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    w, x = rng.standard_normal(w_shape), rng.standard_normal(in_shape)
    bias = rng.standard_normal(w_shape[1] * kw["groups"])
    nd = len(in_shape) - 1
    vec = lambda v: list(np.broadcast_to(v, nd))
    L = oracle.layers.conv_transpose_layer(
        w,
        bias,
        in_shape,
        strides=vec(kw["stride"]),
        pads=vec(kw["padding"]) * 2,
        output_padding=vec(kw["output_padding"]),
        dilations=vec(kw["dilation"]),
        group=kw["groups"],
    )
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    expected = fn(torch.tensor(x)[None], torch.tensor(w), torch.tensor(bias), **kw)[0].numpy()
    assert expected.shape == L.out_shape
    np.testing.assert_allclose(L.forward(x.reshape(-1)), expected.reshape(-1), rtol=1e-12, atol=1e-12)
