"""Per-layer rules: composites, rule maps (CLI and TOML), conventions, and `lrpc inspect` — checked
against the float64 oracle with each layer's own rule."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import pytest

import lrpc
import oracle
from lrpc.api import plan
from lrpc.errors import LrpcError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "keras"


def vgg_like(seed=0):
    """conv1 → relu → conv2 → relu → maxpool → flatten → fc1 → relu → fc2 (node names conv1…, gemm…)."""
    net = oracle.Net((2, 6, 6), seed=seed)
    net.conv(4, [3, 3], pads=[1, 1, 1, 1]).relu().conv(4, [3, 3], pads=[1, 1, 1, 1]).relu()
    net.maxpool([2, 2], [2, 2]).flatten().gemm(8).relu().gemm(5)
    return net


def layer_rules(net, *rules):
    """The oracle's rule per Linear layer, in order."""
    linear = [layer for layer in net.layers if isinstance(layer, oracle.Linear)]
    assert len(linear) == len(rules)
    return dict(zip(map(id, linear), rules))


def oracle_relevance(net, X, per_layer, start_scaled=True):
    out = []
    for x in X.astype(np.float64):
        acts = oracle.forward(net.layers, x)
        y = acts[-1]
        R = np.zeros_like(y)
        R[np.argmax(y)] = y[np.argmax(y)] if start_scaled else 1.0
        for layer, a in zip(reversed(net.layers), reversed(acts[:-1])):
            R = layer.relevance(a, R, per_layer.get(id(layer)))
        out.append(R.reshape(x.shape))
    return np.stack(out)


def lrpc_relevance(model, X, **kwargs):
    sess = oracle.session(lrpc.compile(model, **kwargs))
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": X})))["relevance"]


R = oracle.RULES
COMPOSITES = {  # the composites' meaning, written out for the oracle (conv1, conv2, fc1, fc2)
    "EpsilonPlus": (R["zplus"], R["zplus"], R["epsilon"], R["epsilon"]),
    "EpsilonPlusFlat": (R["flat"], R["zplus"], R["epsilon"], R["epsilon"]),
    "EpsilonAlpha2Beta1": (R["alpha2beta1"], R["alpha2beta1"], R["epsilon"], R["epsilon"]),
    "EpsilonAlpha2Beta1Flat": (R["flat"], R["alpha2beta1"], R["epsilon"], R["epsilon"]),
    "EpsilonGammaBox:low=-1.5,high=2": (R["zbox:low=-1.5,high=2"], R["gamma"], R["epsilon"], R["epsilon"]),
    "ExcitationBackprop": (R["zplus"],) * 4,
    "A": (
        R["alpha1beta0"],
        R["alpha1beta0"],
        R["epsilon:eps=0.25"].func and partial(oracle.rule_epsilon, eps=0.1),
        partial(oracle.rule_epsilon, eps=0.1),
    ),
    "BFlat": (
        R["flat"],
        R["alpha2beta1"],
        partial(oracle.rule_epsilon, eps=0.1),
        partial(oracle.rule_epsilon, eps=0.1),
    ),
}


@pytest.mark.parametrize("composite", COMPOSITES)
def test_composites_match_the_oracle_layer_by_layer(composite):
    net = vgg_like()
    X = np.random.default_rng(1).uniform(-1.5, 2.0, (3, 2, 6, 6)).astype(np.float32)
    expected = oracle_relevance(net, X, layer_rules(net, *COMPOSITES[composite]))
    oracle.assert_rel_close(lrpc_relevance(net.model(), X, composite=composite), expected, 1e-5)


def test_default_is_epsilon_plus_flat():
    p = plan(vgg_like().model())
    assert p.rules.spec == "EpsilonPlusFlat"
    assert [r.spec for r in p.assigned.values()] == ["flat", "zplus", "epsilon:eps=1e-06", "epsilon:eps=1e-06"]


def test_average_pools_get_epsilon_in_composites_and_are_never_first():
    model = onnx.load(FIXTURES / "cnn_avgpool_bn.onnx")
    assigned = {n.name.split("/")[1]: r.spec for n, r in plan(model, composite="EpsilonPlusFlat").assigned.items()}
    assert assigned == {
        "conv1_1": "flat",
        "pool1_1": "epsilon:eps=1e-06",
        "conv2_1": "zplus",
        "pool2_1": "epsilon:eps=1e-06",
        "conv3_1": "zplus",
        "gap_1": "epsilon:eps=1e-06",
        "logits_1": "epsilon:eps=1e-06",
    }


def test_rule_map_first_match_wins_before_the_composite():
    net = vgg_like()
    X = np.random.default_rng(2).standard_normal((3, 2, 6, 6)).astype(np.float32)
    got = lrpc_relevance(
        net.model(),
        X,
        composite="EpsilonPlus",
        rule_map=["conv3=w2", "conv*=flat", "last=epsilon:eps=0.25", "dense=zero"],
    )
    expected = oracle_relevance(net, X, layer_rules(net, R["flat"], R["w2"], R["zero"], R["epsilon:eps=0.25"]))
    oracle.assert_rel_close(got, expected, 1e-5)


def test_rule_map_from_toml_file(tmp_path):
    net = vgg_like()
    path = tmp_path / "rules.toml"
    path.write_text('rule = "alpha2beta1"\n\n[rules]\nfirst = "flat"\nGemm = "epsilon:eps=0.25"\n')
    X = np.random.default_rng(3).standard_normal((2, 2, 6, 6)).astype(np.float32)
    got = lrpc_relevance(net.model(), X, rule_map_file=str(path))
    eps = R["epsilon:eps=0.25"]
    oracle.assert_rel_close(
        got, oracle_relevance(net, X, layer_rules(net, R["flat"], R["alpha2beta1"], eps, eps)), 1e-5
    )


def test_keras_layer_names_select_layers():
    model = onnx.load(FIXTURES / "cnn_avgpool_bn.onnx")
    assigned = plan(model, rule="epsilon", rule_map=["conv2=flat", "logits=w2"]).assigned
    by_scope = {n.name.split("/")[1]: r.spec for n, r in assigned.items()}
    assert by_scope["conv2_1"] == "flat" and by_scope["logits_1"] == "w2" and by_scope["conv1_1"].startswith("epsilon")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(rule_map=["nothing*=flat"]), "pattern 'nothing\\*' matches no linear layer; the layers are: conv1"),
        (dict(rule_map=["conv1"]), "PATTERN=RULE"),
        (dict(rule_map=["conv1=nope"]), "unknown rule 'nope'"),
        (dict(rule="epsilon", composite="EpsilonPlus"), "not both"),
        (dict(composite="EpsilonMinus"), "unknown composite 'EpsilonMinus'"),
        (dict(composite="EpsilonGammaBox"), "needs low, high"),
        (dict(composite="EpsilonPlus:gamma=2"), "takes eps=…"),
        (dict(convention="captum"), "unknown convention"),
    ],
)
def test_rule_map_errors(kwargs, message):
    with pytest.raises(LrpcError, match=message):
        plan(vgg_like().model(), **kwargs)


def test_rule_map_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[rules\nconv1 = flat")
    with pytest.raises(LrpcError, match="not valid TOML"):
        plan(vgg_like().model(), rule_map_file=str(bad))
    bad.write_text('rulez = "flat"\n')
    with pytest.raises(LrpcError, match="unknown keys"):
        plan(vgg_like().model(), rule_map_file=str(bad))
    with pytest.raises(LrpcError, match="cannot read the rule map file"):
        plan(vgg_like().model(), rule_map_file=str(tmp_path / "missing.toml"))


# ---------------------------------------------------------------------------------------------
# Conventions
# ---------------------------------------------------------------------------------------------


def test_zennit_convention_starts_from_one():
    net = vgg_like()
    X = np.random.default_rng(4).standard_normal((3, 2, 6, 6)).astype(np.float32)
    got = lrpc_relevance(net.model(), X, rule="epsilon", convention="zennit")
    expected = oracle_relevance(net, X, layer_rules(net, *[R["epsilon"]] * 4), start_scaled=False)
    oracle.assert_rel_close(got, expected, 1e-5)


def innvestigate_alphabeta(L, x, R_out, alpha, beta):
    """iNNvestigate 2.1.2's α-β: both parts carry the whole bias; division safe only at exact zeros."""
    Wp, Wn, xp, xn = oracle.pos(L.W), oracle.neg(L.W), oracle.pos(x), oracle.neg(x)
    safe = lambda r, z: np.where(z != 0, r / np.where(z == 0, 1, z), 0.0)
    sa = safe(R_out, Wp @ xp + Wn @ xn + L.b)
    si = safe(R_out, Wp @ xn + Wn @ xp + L.b)
    return alpha * (xp * (Wp.T @ sa) + xn * (Wn.T @ sa)) - beta * (xn * (Wp.T @ si) + xp * (Wn.T @ si))


def test_innvestigate_convention():
    net = vgg_like()
    X = np.random.default_rng(5).standard_normal((3, 2, 6, 6)).astype(np.float32)
    ab = partial(innvestigate_alphabeta, alpha=2.0, beta=1.0)
    eps7 = partial(oracle.rule_epsilon, eps=1e-7)
    got = lrpc_relevance(net.model(), X, composite="EpsilonAlpha2Beta1", convention="innvestigate")
    oracle.assert_rel_close(got, oracle_relevance(net, X, layer_rules(net, ab, ab, eps7, eps7)), 1e-5)
    meta = {p.key: p.value for p in lrpc.compile(net.model(), rule="epsilon", convention="innvestigate").metadata_props}
    assert meta["lrpc.rule"] == "epsilon:eps=1e-07" and meta["lrpc.convention"] == "innvestigate"


# ---------------------------------------------------------------------------------------------
# lrpc inspect
# ---------------------------------------------------------------------------------------------

INNVESTIGATE_CNN = Path(__file__).parents[1] / "fixtures" / "innvestigate" / "cnn.onnx"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lrpc.cli", *map(str, args)], capture_output=True, text=True)


def test_inspect_shows_layers_rules_canonizations_and_target(tmp_path):
    done = cli(
        "inspect",
        FIXTURES / "cnn_avgpool_bn.onnx",
        "--composite",
        "EpsilonGammaBox:low=-1,high=1",
        "--rule-map",
        "conv2=w2",
        "--target",
        "3",
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "explains: 'logits' [unk__3,10], target fixed:3" in text
    assert "rules: EpsilonGammaBox:low=-1,high=1; conv2=w2; convention lrpc" in text
    assert "FoldChannelAffine:" in text and "AveragePoolToDepthwiseConv:" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  cnn_avgpool_bn_1/")}
    assert lines["cnn_avgpool_bn_1/conv1_1/BiasAdd"].endswith("zbox:low=-1,high=1")
    assert lines["cnn_avgpool_bn_1/conv2_1/BiasAdd"].endswith("w2")
    assert lines["cnn_avgpool_bn_1/conv3_1/BiasAdd"].endswith("gamma:gamma=0.25")
    assert "[unk__2,8,7,7] → [unk__2,8,4,4]" in lines["cnn_avgpool_bn_1/pool2_1/AvgPool"]


def test_inspect_shows_a_methods_backward_and_its_start():
    done = cli("inspect", INNVESTIGATE_CNN, "--method", "guidedbackprop", "--convention", "innvestigate")
    assert done.returncode == 0, done.stderr
    assert "method: guidedbackprop; convention innvestigate" in done.stdout
    assert "start relevance = its value at the selected units" in done.stdout
    relus = [line for line in done.stdout.splitlines() if " Relu " in line]
    assert len(relus) == 3 and all(line.endswith("ReLU: g ⊙ [x > 0] ⊙ [g > 0]") for line in relus)
    plain = cli("inspect", INNVESTIGATE_CNN, "--method", "deconvnet")
    assert "start relevance = 1 at the selected units" in plain.stdout and "ReLU: g ⊙ [g > 0]" in plain.stdout
    bad = cli("inspect", INNVESTIGATE_CNN, "--method", "gradient", "--rule", "epsilon")
    assert bad.returncode == 2 and "drop --rule" in bad.stderr


def test_inspect_reads_an_explained_file_and_reports_errors(tmp_path):
    out = tmp_path / "e.onnx"
    assert cli("compile", FIXTURES / "dense_bn.onnx", "-o", out, "--composite", "EpsilonPlus").returncode == 0
    done = cli("inspect", out)
    assert done.returncode == 0 and "an explained file" in done.stdout and "EpsilonPlus" in done.stdout
    bad = cli("inspect", FIXTURES / "dense_bn.onnx", "--rule-map", "zzz=flat")
    assert bad.returncode == 2 and bad.stderr.startswith("lrpc: error: rule map pattern 'zzz'")


def test_innvestigate_convention_drops_the_bias_in_zplus_and_w2():
    """iNNvestigate's lrp.z_plus and lrp.w_square ignore the bias (measured by benchmarks/fidelity.py)."""
    net = vgg_like()
    X = np.random.default_rng(6).standard_normal((3, 2, 6, 6)).astype(np.float32)
    unbiased = lambda rule: (
        lambda L, x, R_out: rule(oracle.Linear(L.W, 0 * L.b, L.S, L.in_shape, L.out_shape), x, R_out)
    )
    zplus = unbiased(partial(innvestigate_alphabeta, alpha=1.0, beta=0.0))
    w2 = unbiased(oracle.rule_w2)
    for spec, rule in (("zplus", zplus), ("w2", w2)):
        got = lrpc_relevance(net.model(), X, rule=spec, convention="innvestigate")
        oracle.assert_rel_close(got, oracle_relevance(net, X, layer_rules(net, *[rule] * 4)), 1e-5)


def _residual_net():
    from oracle import graphnet

    g = graphnet.GraphNet((2, 5, 5), seed=4)
    h = g.relu(g.conv("x", 3, (3, 3), pads=[1, 1, 1, 1]))
    h = g.relu(g.combine("Add", g.conv(h, 3, (3, 3), pads=[1, 1, 1, 1]), h))
    return g, g.gemm(g.flatten(h), 4)


JOIN_OPTIONS = {  # options → the oracle's rule per op (by output name prefix) and the same options without the ε
    "join pattern": (
        dict(rule="zero", rule_map=["join=epsilon:eps=0.3"]),
        {"conv": "zero", "gemm": "zero", "add": "epsilon:eps=0.3"},
        dict(rule="zero"),
    ),
    "composite stabilizer": (
        dict(composite="EpsilonPlus:stabilizer=0.3"),
        {"conv": "zplus", "gemm": "epsilon", "add": "epsilon:eps=0.3"},
        dict(composite="EpsilonPlus"),
    ),
}


@pytest.mark.parametrize("how", JOIN_OPTIONS)
def test_join_pattern_and_composite_stabilizer_set_the_residual_eps(how):
    """`join=epsilon:eps=…` and a composite's `stabilizer=…` reach the Add of two activations: lrpc equals
    the float64 oracle run with the linear layers' rules and that ε at the join."""
    options, specs, without = JOIN_OPTIONS[how]
    g, out = _residual_net()
    compiled = lrpc.compile(g.model(out), **options)
    X = np.random.default_rng(3).standard_normal((3, *g.input_shape)).astype(np.float32)
    got = oracle.run(oracle.session(compiled), X)["relevance"]

    def explain(x):
        values, rel = {"x": x.astype(np.float64)}, {}
        for op in g.ops:
            values[op.output] = op.forward([values[n] for n in op.inputs])
        y = values[out]
        rel[out] = np.where(np.arange(y.size) == np.argmax(y), y, 0.0)
        for op in reversed(g.ops):
            if op.output in rel:
                spec = next((s for prefix, s in specs.items() if op.output.startswith(prefix)), "zero")
                for name, r in zip(
                    op.inputs, op.relevance([values[n] for n in op.inputs], values[op.output], rel.pop(op.output), spec)
                ):
                    rel[name] = rel.get(name, 0.0) + r
        return rel["x"]

    expected = np.stack([explain(x) for x in X])
    oracle.assert_rel_close(got, expected, 1e-5)
    default = oracle.run(oracle.session(lrpc.compile(g.model(out), **without)), X)["relevance"]
    assert oracle.rel_err_per_sample(default, expected).max() > 1e-3  # the join's ε made a difference


def test_join_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(LrpcError, match="matches no sum of activations"):
        lrpc.compile(vgg_like().model(), rule_map=["join=epsilon:eps=0.1"])
