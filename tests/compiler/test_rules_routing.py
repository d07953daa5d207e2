"""Routing ops — Concat, Split (some outputs unused), Slice (any steps), Pad (constant, reflect, edge),
Gather, Tile, Expand — and a U-Net-like skip connection, against the float64 graph oracle.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import oracle
from oracle import graphnet
from oracle.graphnet import Cases

RULES = [r for r in oracle.RULES if r != "alpha1beta0"]


def _concat_split(g):
    """Two branches of 4 and 2 channels concatenated, split in three parts of 2, 1, 3 channels, all used."""
    a = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
    b = g.relu(g.conv("x", 2, (3, 3), pads=[0, 0, 2, 2]))
    c = g.relu(g.conv(g.concat([a, b], 1), 6, (3, 3), pads=[1, 1, 1, 1]))
    s1, s2, s3 = g.split(c, 1, [2, 1, 3])
    d = g.relu(g.conv(g.concat([s3, s1], 1), 3, (3, 3), strides=[2, 2]))
    return g.gemm(g.concat([g.flatten(d), g.flatten(s2)], 1), 5)


def _split_partial(g):
    """Split along a spatial axis where the middle part is unused (it gets no relevance: zeros)."""
    a = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))
    top, _, bottom = g.split(a, 2, [2, 3, 1])
    return g.gemm(g.concat([g.flatten(g.relu(g.conv(top, 2, (2, 2)))), g.flatten(bottom)], 1), 5)


def _slices(g):
    """Slices with steps 1, 2, −1, −2, clamped ends, a subset of axes."""
    a = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
    p = g.slice(a, [0, 5, 1], [100, -100, 6], [1, 2, 3], [1, -2, 2])
    q = g.slice(a, [3, -1], [0, -100], [1, 3], [-1, -1])
    r = g.slice(a, [1], [4], [2], [1])
    return g.gemm(g.concat([g.flatten(g.relu(g.conv(p, 3, (2, 2)))), g.flatten(q), g.flatten(r)], 1), 5)


def _pads(g):
    """Constant pad (asymmetric, negative = crop, value −0.5: the padded ReLU output is no longer
    non-negative, so x⁻ terms of the next layer stay), reflect and edge pads (their copies sum back)."""
    a = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))
    p = g.conv(g.pad(a, [1, 0, 2], [-1, 1, 0], value=-0.5), 3, (3, 3))
    r = g.conv(g.pad(a, [0, 2, 1], [0, 1, 2], mode="reflect"), 3, (3, 3), strides=[2, 2])
    e = g.pad(a, [0, 1, 0], [0, 0, 2], mode="edge")
    return g.gemm(g.concat([g.flatten(g.relu(p)), g.flatten(g.relu(r)), g.flatten(e)], 1), 5)


def _gathers(g):
    """Gather with repeated and negative indices (their relevance adds up), a scalar index (the axis
    goes away), Tile and Expand (copies sum back)."""
    a = g.relu(g.conv("x", 4, (3, 3), pads=[1, 1, 1, 1]))
    q = g.gather(a, [2, 0, 2, -1], 1)
    t = g.tile(g.gather(a, 1, 2), [2, 1])  # (4, 6) → (8, 6)
    e = g.expand(g.reduce("ReduceMax", a, [2], keepdims=1), [4, 5, 3])
    return g.gemm(g.concat([g.flatten(g.relu(g.conv(q, 2, (3, 3)))), g.flatten(t), g.flatten(e)], 1), 5)


def _unet_like(g):
    """Down (strided conv), up (ConvTranspose, stride 2), skip connection by Concat."""
    a = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))  # (3, 6, 6)
    d = g.relu(g.conv(a, 4, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1]))  # (4, 3, 3)
    u = g.relu(g.conv_transpose(d, 3, (3, 3), strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]))
    c = g.relu(g.conv(g.concat([u, a], 1), 2, (3, 3), strides=[2, 2]))
    return g.gemm(g.flatten(c), 5)


CASES = Cases(
    {
        "concat_split": ((2, 5, 6), _concat_split),
        "split_partial": ((2, 6, 5), _split_partial),
        "slices": ((2, 6, 7), _slices),
        "pads": ((2, 5, 5), _pads),
        "gathers": ((2, 5, 6), _gathers),
        "unet_like": ((2, 6, 6), _unet_like),
    }
)
CONSERVING = ["concat_split", "split_partial", "slices", "gathers", "unet_like"]  # pads: −0.5 is a constant


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("net", CASES.builders)
def test_matches_oracle(net, rule):
    CASES.check(net, rule)


@pytest.mark.parametrize("net", CASES.builders)
def test_batch_equals_single_samples(net):
    CASES.check_batch(net, "zplus")


@pytest.mark.parametrize("net", CONSERVING)
def test_bias_free_net_conserves_under_zero(net):
    R, R_oracle, y = CASES.check(net, "zero", batch=4, bias=False)
    np.testing.assert_allclose(R.reshape(4, -1).astype(np.float64).sum(axis=1), y.max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(R_oracle.reshape(4, -1).sum(axis=1), y.max(axis=1), rtol=1e-9)


def test_unused_split_output_gets_no_relevance():
    """split_partial's middle rows 2–4 of `a` feed nothing, and input row 3 reaches `a` (3x3 conv, pad 1)
    only through them: its relevance is exactly zero, while the outer rows carry relevance."""
    X = CASES.inputs("split_partial", "epsilon", 3)
    R = oracle.run(oracle.session(CASES.compiled("split_partial", "epsilon")), X)["relevance"]
    assert np.all(R[:, :, 3, :] == 0)
    assert np.all(np.abs(R[:, :, [0, 5], :]).sum(axis=(1, 2, 3)) > 0)


def test_emitted_file_passes_the_checker():
    onnx.checker.check_model(CASES.compiled("gathers", "alpha2beta1"), full_check=True)


def _float64_net(g):
    """Per-sample vectors: Gemm, Concat, Split, Slice, Pad, Gather, Tile (ops onnxruntime runs in double)."""
    a = g.relu(g.gemm("x", 8))
    s1, s2 = g.split(a, 1, [3, 5])
    parts = [g.slice(s2, [4], [-100], [1], [-2]), g.pad(s1, [1], [2], mode="reflect"), g.gather(a, [7, 0, 7], 1)]
    v = g.concat(parts, 1)
    return g.gemm(g.relu(g.gemm(g.tile(v, [2]), 6)), 4)


@pytest.mark.parametrize("rule", ["zero", "epsilon", "alpha2beta1", "flat"])
def test_float64_model_matches_tightly(rule):
    g = graphnet.GraphNet((10,), seed=5)
    out = _float64_net(g)
    X = graphnet.pick_inputs(g, out, rule, 3, seed=4)
    graphnet.check(g, out, X, rule, tol=1e-12, dtype=np.float64)
