"""Small CNNs end to end under every rule, against the float64 oracle (tests/oracle/):
relevance, batching, the three target modes, and conservation.
"""

from __future__ import annotations

import functools

import lrpc
import numpy as np
import pytest

import oracle
from oracle import Net


TOL = 1e-5
ALL_RULES = list(oracle.RULES)


def _pool_then_pool3s2(net):
    """Conv-Relu-MaxPool(2x2 s2)-Conv-Relu-MaxPool(3x3 s2, overlapping)-Flatten-Gemm-Relu-Gemm-Softmax."""
    (
        net.conv(4, (3, 3), pads=(1, 1, 1, 1))
        .relu()
        .maxpool((2, 2), (2, 2))  # (4, 6, 6)
        .conv(6, (3, 3), pads=(1, 1, 1, 1))
        .relu()
        .maxpool((3, 3), (2, 2))  # (6, 2, 2)
        .flatten()
        .gemm(16)
        .relu()
        .gemm(5)
        .softmax()
    )


def _pool_then_pool2s1(net):
    """Conv-Relu-MaxPool(2x2 s2)-Conv-Relu-MaxPool(2x2 s1, overlapping)-Flatten-Gemm-Relu-Gemm-Softmax."""
    (
        net.conv(4, (3, 3), pads=(1, 1, 1, 1))
        .relu()
        .maxpool((2, 2), (2, 2))  # (4, 5, 5)
        .conv(6, (3, 3), pads=(1, 1, 1, 1))
        .relu()
        .maxpool((2, 2), (1, 1))  # (6, 4, 4)
        .flatten()
        .gemm(16, trans_b=0)
        .relu()
        .gemm(5)
        .softmax()
    )


def _mixed(net):
    """Strided asymmetric conv, padded overlapping pool, depthwise conv, MatMul+Add, Gemm alpha."""
    (
        net.conv(4, (3, 3), strides=(2, 2), pads=(1, 0, 0, 1))
        .relu()  # (4, 4, 4)
        .maxpool((3, 3), (1, 1), pads=(1, 1, 1, 1))  # (4, 4, 4)
        .conv(4, (3, 3), pads=(1, 1, 1, 1), group=4)
        .relu()  # depthwise
        .flatten()
        .matmul(12)
        .relu()
        .gemm(5, trans_b=0, alpha=0.8)
        .softmax()
    )


def _routing(net):
    """Other activations (relevance passes through) and routing ops: LeakyRelu leaves negative inputs
    to the next layer (x- terms of alphabeta/gamma), Transpose/Reshape must route relevance back."""
    (
        net.conv(4, (3, 3), pads=(1, 1, 1, 1))
        .activation("LeakyRelu", lambda x: np.where(x > 0, x, np.float32(0.1) * x), alpha=0.1)
        .transpose((1, 2, 0))
        .reshape((-1,))  # NCHW -> NHWC, flatten
        .gemm(12)
        .activation("Tanh", np.tanh)
        .matmul(8)
        .activation("Sigmoid", lambda x: 1 / (1 + np.exp(-x)))
        .gemm(5)
        .softmax()
    )


NETS = {
    "pool2_pool3s2": ((2, 12, 12), _pool_then_pool3s2),
    "pool2_pool2s1": ((2, 10, 10), _pool_then_pool2s1),
    "mixed": ((3, 9, 9), _mixed),
    "routing": ((2, 6, 5), _routing),
}
RELU_NETS = ["pool2_pool3s2", "pool2_pool2s1", "mixed"]


@functools.lru_cache(maxsize=None)
def build(name: str, bias: bool = True, seed: int = 3, bias_std: float = 0.2):
    shape, add = NETS[name]
    net = Net(shape, seed=seed, use_bias=bias, bias_std=bias_std)
    add(net)
    return net.model(), net.layers


@functools.lru_cache(maxsize=None)
def compiled(name: str, rule: str, bias: bool = True, target=None, bias_std: float = 0.2):
    return lrpc.compile(build(name, bias, bias_std=bias_std)[0], rule=rule, target=target)


def inputs(name, rule, batch, bias=True, target=None, seed=11, bias_std=0.2):
    return oracle.pick_inputs(
        build(name, bias, bias_std=bias_std)[1], rule, NETS[name][0], batch, seed=seed, target=target
    )


# ---------------------------------------------------------------------------------------------
# Relevance end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("rule", ALL_RULES)
@pytest.mark.parametrize("net", NETS)
def test_network_matches_oracle(net, rule, batch):
    model, layers = build(net)
    oracle.check_against_oracle(model, layers, inputs(net, rule, batch), rule, tol=TOL, compiled=compiled(net, rule))


@pytest.mark.parametrize("rule", ALL_RULES)
@pytest.mark.parametrize("net", NETS)
def test_batch_equals_single_samples(net, rule):
    """Batch 5 through the compiled file gives, per sample, what each sample alone gives at batch 1."""
    sess = oracle.session(compiled(net, rule))
    X = inputs(net, rule, 5)
    together = oracle.run(sess, X)
    for n in range(5):
        alone = oracle.run(sess, X[n : n + 1])
        for name, value in alone.items():
            oracle.assert_rel_close(together[name][n : n + 1], value, 1e-6, what=f"sample {n}, output {name}")


def test_maxpool_ties_go_to_first_max():
    """An all-zero window (ReLU killed it) is a tie; its relevance goes to the window's first element.

    flat ignores x, so relevance reaches units whose ReLU output is 0: with the ReLU before each pool,
    windows of zeros occur. This checks that such ties occur in the inputs the tests use, so that the
    tie-breaking convention is really compared (test_network_matches_oracle does the comparing).
    """
    _, layers = build("pool2_pool2s1")
    X = inputs("pool2_pool2s1", "flat", 5)
    ties = 0
    for x in X:
        acts = oracle.forward(layers, x)
        for layer, a in zip(layers, acts):
            if isinstance(layer, oracle.MaxPool):
                ties += sum(int(np.sum(a[w] == a[w].max()) > 1) for w in layer.windows)
    assert ties > 0


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ALL_RULES)
@pytest.mark.parametrize("net", NETS)
def test_fixed_target(net, rule):
    model, layers = build(net)
    X = inputs(net, rule, 4, target=3)
    oracle.check_against_oracle(model, layers, X, rule, target=3, tol=TOL, compiled=compiled(net, rule, target=3))


@pytest.mark.parametrize("rule", ALL_RULES)
@pytest.mark.parametrize("net", NETS)
def test_input_target(net, rule):
    model, layers = build(net)
    t = np.array([0, 4, 2, 1, 3], np.int64)
    X = inputs(net, rule, 5, target=t)
    proto = compiled(net, rule, target="input")
    R, _, _ = oracle.check_against_oracle(model, layers, X, rule, target=t, tol=TOL, compiled=proto)
    # the fed target really steers it: a different class per sample gives a different relevance
    other = oracle.run(oracle.session(proto), X, (t + 1) % 5)["relevance"]
    assert np.all(oracle.rel_err_per_sample(other, R) > 1e-2)


@pytest.mark.parametrize("net", NETS)
def test_max_target_equals_fed_argmax(net):
    """target=None (argmax in the graph) and target="input" fed with the argmax agree."""
    X = inputs(net, "epsilon", 5)
    by_max = oracle.run(oracle.session(compiled(net, "epsilon")), X)
    t = np.argmax(by_max[next(iter(by_max))], axis=1)
    fed = oracle.run(oracle.session(compiled(net, "epsilon", target="input")), X, t)
    np.testing.assert_array_equal(fed["relevance"], by_max["relevance"])


# ---------------------------------------------------------------------------------------------
# Conservation
# ---------------------------------------------------------------------------------------------


def _explained_logit(layers, X, target=None):
    logits = np.stack([oracle.forward(layers, x)[-1] for x in X])
    t = np.argmax(logits, axis=1) if target is None else np.broadcast_to(target, (len(X),))
    return logits[np.arange(len(X)), t]


# rule -> relative tolerance of sum(R_in) = explained logit on bias-free ReLU nets
CONSERVING = {"zero": 1e-5, "epsilon": 1e-4, "flat": 1e-5, "w2": 1e-5}


@pytest.mark.parametrize("rule", CONSERVING)
@pytest.mark.parametrize("net", RELU_NETS)
def test_bias_free_net_conserves(net, rule):
    model, layers = build(net, bias=False)
    X = inputs(net, rule, 5, bias=False)
    R, R_oracle, _ = oracle.check_against_oracle(
        model, layers, X, rule, tol=TOL, compiled=compiled(net, rule, bias=False)
    )
    y = _explained_logit(layers, X.astype(np.float64))
    total = R.reshape(5, -1).astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(total, y, rtol=CONSERVING[rule], atol=0)
    # the oracle itself conserves in float64 up to what eps absorbs (<= 1e-6 per unit and layer)
    np.testing.assert_allclose(R_oracle.reshape(5, -1).sum(axis=1), y, rtol=1e-5, atol=0)


def _epsilon_bias_share(layers, x, eps=oracle.EPS):
    """sum(R_out) - sum(R_in) of each linear layer under epsilon, summed: the relevance that biases
    (and eps) absorb, sum_j R_j (b_j + eps sign0(z_j)) / stab(z_j), computed along the oracle's pass."""
    acts = oracle.forward(layers, x)
    y = acts[-1]
    R = np.zeros_like(y)
    t = int(np.argmax(y))
    R[t] = y[t]
    absorbed = 0.0
    for layer, a in zip(reversed(layers), reversed(acts[:-1])):
        R_in = layer.relevance(a, R, oracle.RULES["epsilon"])
        if isinstance(layer, oracle.Linear):
            z = layer.W @ a + layer.b
            absorbed += np.sum(R * (layer.b + eps * np.where(z >= 0, 1.0, -1.0)) / oracle.stab(z, eps))
        R = R_in
    return absorbed


@pytest.mark.parametrize("net", RELU_NETS)
def test_net_with_biases_does_not_conserve(net):
    """With biases, epsilon loses (or gains) the biases' share: the conservation check above can fail.

    Biases ~ N(0, 0.5) here, so that every sample's gap is far (> 100x) above the 1e-4 tolerance."""
    model, layers = build(net, bias=True, bias_std=0.5)
    X = inputs(net, "epsilon", 5, bias_std=0.5)
    R, _, _ = oracle.check_against_oracle(
        model, layers, X, "epsilon", tol=TOL, compiled=compiled(net, "epsilon", bias_std=0.5)
    )
    y = _explained_logit(layers, X.astype(np.float64))
    gap = y - R.reshape(5, -1).astype(np.float64).sum(axis=1)
    assert np.all(np.abs(gap) > 1e-2 * np.abs(y)), f"relative gaps {gap / y}: the biases should be visible"
    # and the gap is exactly the relevance the biases absorb
    expected = np.array([_epsilon_bias_share(layers, x) for x in X.astype(np.float64)])
    np.testing.assert_allclose(gap, expected, rtol=1e-3, atol=1e-5 * np.abs(y).max())


# ---------------------------------------------------------------------------------------------
# float64 models: no float32 rounding, so lrpc and the oracle must agree to ~1e-12
# ---------------------------------------------------------------------------------------------


def _mlp(net):
    """MatMul+Add on [t, k], MaxPool1d, Gemm with alpha/beta, MatMul without bias: ops onnxruntime
    runs in double on CPU (its Conv/ConvTranspose are float32 only)."""
    (
        net.reshape((3, 4))
        .matmul(6)
        .relu()
        .flatten()  # (18,)
        .reshape((2, 9))
        .maxpool((2,), (1,))
        .flatten()  # (16,)
        .gemm(10, trans_b=0, alpha=0.7, beta=1.3)
        .relu()
        .matmul(7, bias=False)
        .relu()
        .gemm(5)
        .softmax()
    )


@functools.lru_cache(maxsize=None)
def build_mlp():
    net = Net((12,), seed=5)
    _mlp(net)
    return net.model(np.float64), net.layers


@pytest.mark.parametrize("rule", ALL_RULES)
def test_float64_model_matches_oracle_tightly(rule):
    model, layers = build_mlp()
    X = oracle.pick_inputs(layers, rule, (12,), 5, seed=3, target=2)
    oracle.check_against_oracle(model, layers, X, rule, target=2, tol=1e-12)


@pytest.mark.parametrize("target", [None, "input"])
def test_float64_model_with_argmax_or_fed_target(target):
    model, layers = build_mlp()
    X = oracle.pick_inputs(layers, "epsilon", (12,), 3, seed=3, target=None if target is None else 1)
    t = None if target is None else np.array([1, 1, 1], np.int64)
    oracle.check_against_oracle(model, layers, X, "epsilon", target=t, tol=1e-12)


# ---------------------------------------------------------------------------------------------
# The oracle itself (no lrpc): identities between rules that hold by algebra
# ---------------------------------------------------------------------------------------------


def test_oracle_rule_identities():
    _, layers = build("mixed")
    L = layers[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(L.W.shape[1])
    R = rng.standard_normal(L.W.shape[0])
    rules = oracle  # the rule functions, called directly
    # epsilon -> zero as eps -> 0; gamma with gamma = 0 is epsilon (its two groups split s by sign(z))
    np.testing.assert_allclose(rules.rule_epsilon(L, x, R, eps=1e-12), rules.rule_zero(L, x, R), rtol=1e-6)
    np.testing.assert_allclose(rules.rule_gamma(L, x, R, gamma=0.0), rules.rule_epsilon(L, x, R), rtol=1e-9)
    # alpha1beta0 on non-negative inputs and non-negative R keeps sum(R_in) <= sum(R) with equality
    # when the biases are non-positive: za = W+ x + 0
    L0 = oracle.Linear(L.W, np.minimum(L.b, 0), L.S, L.in_shape, L.out_shape)
    xp, Rp = np.abs(x), np.abs(R)
    np.testing.assert_allclose(
        rules.rule_alphabeta(L0, xp, Rp, 1.0, 0.0).sum(), Rp[(L0.W.clip(0) @ xp) > 0].sum(), rtol=1e-5
    )
    # zbox with l = h = 0 is the bias-free zero rule
    Lnb = oracle.Linear(L.W, np.zeros_like(L.b), L.S, L.in_shape, L.out_shape)
    np.testing.assert_allclose(rules.rule_zbox(L, x, R, 0.0, 0.0, eps=1e-12), rules.rule_zero(Lnb, x, R), rtol=1e-6)


def test_oracle_conv_matrix_matches_torch():
    """The explicit conv matrices agree with torch's conv (another independent implementation)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    cases = [
        ((3, 9, 8), (4, 3, 3, 3), dict(stride=2, dilation=1, groups=1), (0, 1, 1, 0)),
        ((4, 7, 9), (4, 1, 3, 2), dict(stride=(1, 2), dilation=(2, 1), groups=4), (2, 1, 0, 1)),
        ((2, 5, 6, 4), (4, 1, 3, 3, 2), dict(stride=(2, 1, 1), dilation=1, groups=2), (1, 0, 1, 1, 0, 1)),
    ]
    for in_shape, w_shape, kw, pads in cases:
        nd = len(in_shape) - 1
        w = rng.standard_normal(w_shape)
        x = rng.standard_normal(in_shape)
        L = oracle.conv_layer(
            w,
            None,
            in_shape,
            strides=list(np.broadcast_to(kw["stride"], nd)),
            pads=pads,
            dilations=list(np.broadcast_to(kw["dilation"], nd)),
            group=kw["groups"],
        )
        # torch pads symmetrically only: pad explicitly (F.pad takes the last axis first)
        torch_pads = [p for a in reversed(range(nd)) for p in (pads[a], pads[nd + a])]
        xt = F.pad(torch.tensor(x)[None], torch_pads)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
        expected = conv(xt, torch.tensor(w), **kw)[0].numpy()
        assert expected.shape == L.out_shape
        np.testing.assert_allclose(L.forward(x.reshape(-1)), expected.reshape(-1), rtol=1e-12, atol=1e-12)
