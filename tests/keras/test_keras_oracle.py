"""Keras 3 models, converted by lrpc's Keras frontend, explained by lrpc and compared with the float64 DAG
oracle (tests/oracle/onnx_reader.py: the converted ONNX read at the matrix level, BN composed into
its conv, no lrpc code); the converted forward pass equals Keras' own.

- zoo_2d / zoo_1d (models/keras_models.py): Conv1D/2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose,
  BatchNormalization, Max/Average pooling with padding "same" and "valid", global average and max
  pooling, Dense, Add, Concatenate, Dropout, Activation, ReLU, LeakyReLU; every rule.
- The two-output autoencoder in Keras: the class logit, the whole reconstruction, a region of it (a mask
  fed at run time) and latent unit 3 (`explain="latent:3"`, the Keras layer's name).
The inputs are channels-last, as in Keras; the oracle reads the same NHWC input, so agreement also
shows the relevance map comes out in the input's layout.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import keras_models  # models/, on sys.path through tests/conftest.py
import lrpc
import oracle
from lrpc.frontend.keras import from_keras_model
from oracle.dag import explain, forward, per_sample, pick_inputs, sensitivity
from oracle.onnx_reader import read_model

ZBOX = f"zbox:low={oracle.ZBOX_LOW:g},high={oracle.ZBOX_HIGH:g}"
RULES = ["epsilon", "zero", "zplus", "alpha2beta1", "gamma", "flat", "w2", ZBOX, "zplus;first=flat"]
# Ill-conditioned in float32 on every input (pick_inputs finds none with sensitivity ≤ 1e-6), compared at
# 10× each sample's measured sensitivity as in tests/compiler/test_architectures.py: flat/w2/zbox on every
# layer of a net with a residual Add (relevance split by x_i / Σx near 0), ε/0 on the SELU autoencoder
# (onnxruntime's float32 Selu is exp(x) − 1, and the ε-rule divides it by the preceding z).
ILL = {"zoo_2d": {"flat", "w2", ZBOX}, "zoo_1d": {"flat", "w2", ZBOX}, "autoencoder": {"epsilon", "zero"}}


@functools.lru_cache(maxsize=None)
def converted(name):
    """(Keras model, its ONNX conversion, the oracle of that ONNX)."""
    model = keras_models.build(name)
    proto = from_keras_model(model)
    return model, proto, read_model(proto)


def compare(name, spec, batch=2, output=None, explain_arg=None, target=None):
    """Compile `name` with `spec`, run in onnxruntime, compare outputs and relevance with the oracle;
    return the relative L2 error per sample."""
    _, proto, net = converted(name)
    tensor, oracle_target = output or net.outputs[0], target
    if explain_arg:
        layer, index = explain_arg.split(":")
        tensor, oracle_target = _layer_output(proto, layer), int(index)
    mask = None
    if target == "mask":  # a region per sample: a random square of the explained map
        units = net.shapes[tensor]
        mask = np.zeros((batch, *units))
        for n, (r, c) in enumerate(np.random.default_rng(5).integers(0, units[0] // 2, (batch, 2))):
            mask[n, r : r + units[0] // 2, c : c + units[1] // 2] = 1.0
        oracle_target = mask
    ill = spec in ILL[name]
    X = pick_inputs(net, spec, tensor, batch, oracle_target, limit=1e-4 if ill else oracle.SENSITIVITY_LIMIT)
    default, _, first = spec.partition(";first=")
    compiled = lrpc.compile(
        proto,
        rule=default,
        rule_map=[f"first={first}"] if first else (),
        target=target,
        output_name=output,
        explain=explain_arg,
    )
    sess = oracle.session(compiled)
    feeds = {net.input_name: X} | ({} if mask is None else {"mask": mask.astype(np.float32)})
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    values = [forward(net, x) for x in X.astype(np.float64)]
    for out in net.outputs:
        oracle.assert_rel_close(got[out], np.stack([v[out] for v in values]), 1e-5, what=f"output {out}")
    _, R = explain(net, X, spec, tensor, oracle_target)
    assert got["relevance"].shape == X.shape and np.abs(R).sum() > 0
    tol = 1e-5
    if ill:
        tol = np.maximum(
            1e-5,
            10
            * np.array(
                [
                    max(
                        sensitivity(net, x, spec, tensor, per_sample(oracle_target, n)),
                        input_sensitivity(net, x, spec, tensor, per_sample(oracle_target, n)),
                    )
                    for n, x in enumerate(X)
                ]
            ),
        )
    err = oracle.rel_err_per_sample(got["relevance"], R)
    assert np.all(err <= tol), f"relevance: relative L2 error per sample {err} exceeds {tol}"
    return err


def input_sensitivity(net, x, spec, tensor, target, rel=1e-7, tries=3):
    """The oracle's own relative change of R when x moves by float32 round-off (x·(1 + rel·ξ)), the
    largest of `tries` draws. oracle.dag.sensitivity jitters weights and x together once; near a
    ReLU or max-pool switch (zoo_2d under flat, relevance reaching off units) x alone moves R 30× more."""
    rng = np.random.default_rng(7)
    batch_target = target[None] if isinstance(target, np.ndarray) else target  # a mask: one row per sample
    R = explain(net, x[None], spec, tensor, batch_target)[1]
    moved = [
        explain(net, (x * (1 + rel * rng.standard_normal(x.shape)))[None], spec, tensor, batch_target)[1]
        for _ in range(tries)
    ]
    return max(float(oracle.rel_err_per_sample(m, R)[0]) for m in moved)


def _layer_output(proto, layer):
    """The output of the last node in Keras layer `layer`'s scope (as `--explain layer` resolves it)."""
    return [n for n in proto.graph.node if n.name.split("/")[0] == layer][-1].output[0]


def test_converted_graphs_hold_every_layer_kind():
    ops = {
        name: [(n.op_type, {a.name: a for a in n.attribute}) for n in converted(name)[1].graph.node]
        for name in ("zoo_2d", "zoo_1d")
    }
    kinds = {op for op, _ in ops["zoo_2d"] + ops["zoo_1d"]}
    assert {
        "Conv",
        "ConvTranspose",
        "MaxPool",
        "AveragePool",
        "Add",
        "Concat",
        "MatMul",
        "Relu",
        "LeakyRelu",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "ReduceMax",
        "Mul",
    } <= kinds
    groups = [a["group"].i for op, a in ops["zoo_2d"] if op == "Conv" and "group" in a]
    assert max(groups) > 1, "DepthwiseConv2D / SeparableConv2D should give grouped Convs"
    padded = [
        op
        for name in ops
        for op, a in ops[name]
        if op in ("MaxPool", "AveragePool") and "pads" in a and any(a["pads"].ints)
    ]
    assert {"MaxPool", "AveragePool"} <= set(padded), "padding='same' pools should carry pads"
    conv1d = [a["kernel_shape"].ints for op, a in ops["zoo_1d"] if op == "Conv"]
    assert conv1d and all(k[0] == 1 for k in conv1d), "Conv1D arrives as a 1×k Conv on an unsqueezed axis"


@pytest.mark.parametrize("name", ["zoo_2d", "zoo_1d", "autoencoder"])
def test_forward_equals_keras(name):
    model, proto, _ = converted(name)
    x = np.random.default_rng(3).standard_normal((3, *model.input_shape[1:])).astype(np.float32)
    sess = oracle.session(proto)
    got = sess.run(None, {proto.graph.input[0].name: x})
    want = model(x, training=False)
    for a, b in zip(got, want if isinstance(want, (list, tuple)) else [want]):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", ["zoo_2d", "zoo_1d"])
def test_layer_zoo_matches_the_oracle(name, rule):
    compare(name, rule)


AE_RULES = ["epsilon", "zplus", "alpha2beta1", "gamma", "flat"]
AE_CASES = {
    "class_logit": dict(output="class_logits"),
    "reconstruction_all": dict(output="reconstruction", target="all"),
    "reconstruction_mask": dict(output="reconstruction", target="mask"),
    "latent_3": dict(explain_arg="latent:3"),
}


@pytest.mark.parametrize("rule", AE_RULES)
@pytest.mark.parametrize("case", AE_CASES)
def test_keras_autoencoder_matches_the_oracle(case, rule):
    compare("autoencoder", rule, batch=2, **AE_CASES[case])
