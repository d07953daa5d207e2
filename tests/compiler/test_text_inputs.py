"""Token-id inputs explained at their embedding lookups (lrpc/text.py), and language-model heads explained at
one position (targets.py), end to end through lrpc.compile and onnxruntime, against float64 oracles:

    classifier  h = mean_s E[ids_s],  z = h W (+ b),  t = argmax z,  R_t = z_t
                R_h[j]    = h_j W[j, t] R_t / stab(z_t)                        (ε rule at the head)
                R_E[s, j] = (E[ids_s, j] / S) R_h[j] / stab(h_j)                (the mean splits by share)
                R_ids[s]  = Σ_j R_E[s, j]
    lm head     h = tanh(E[ids]), z = h W [batch, seq, vocab]; at p = −1:
                R_ids[s] = [s = p] Σ_j h_j W[j, t] R_t / stab(z_t)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import lrpc
import oracle
import text_models
from lrpc.errors import LrpcError

EPS = 1e-9
RULE = f"epsilon:eps={EPS}"


def stab(z):
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def run(proto, feeds):
    sess = oracle.session(proto)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def classifier_oracle(w, ids, mask=None, second=False, position=0.0):
    E = w["E"].astype(np.float64)[ids] + position
    if second:
        E = E + w["E2"].astype(np.float64)[ids]
    if mask is not None:
        E = E * mask[:, :, None]
    S = ids.shape[1]
    h = E.mean(1)
    z = h @ w["W"].astype(np.float64) + (w["b"] if "b" in w else 0)
    t = z.argmax(1)
    zt = z[np.arange(len(z)), t]
    R_h = h * w["W"][:, t].T * (zt / stab(zt))[:, None]
    R_E = E / S * (R_h / stab(h))[:, None, :]
    return R_E.sum(2), R_E, zt


def ids_of(batch, seq, vocab=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq)).astype(np.int64)


def test_classifier_per_token_matches_oracle_at_two_lengths():
    model, w = text_models.classifier()
    proto = lrpc.compile(model, RULE)
    assert [i.name for i in proto.graph.input] == ["ids"]
    assert [o.name for o in proto.graph.output] == ["logits", "relevance"]
    for batch, seq in ((3, 4), (2, 9)):  # one file, dynamic batch and seq
        ids = ids_of(batch, seq)
        out = run(proto, {"ids": ids})
        expect, _, zt = classifier_oracle(w, ids)
        assert out["relevance"].shape == (batch, seq) and out["relevance"].dtype == np.float32
        oracle.assert_rel_close(out["relevance"], expect, 1e-5)
        np.testing.assert_allclose(out["relevance"].sum(1), zt, rtol=1e-5)  # conservation, bias-free


def test_per_feature_output_and_metadata():
    model, w = text_models.classifier()
    proto = lrpc.compile(model, RULE, per_feature=True)
    assert [o.name for o in proto.graph.output] == ["logits", "relevance", "relevance_per_feature"]
    ids = ids_of(2, 5)
    out = run(proto, {"ids": ids})
    _, expect, _ = classifier_oracle(w, ids)
    assert out["relevance_per_feature"].shape == (2, 5, 5)
    oracle.assert_rel_close(out["relevance_per_feature"], expect, 1e-5)
    np.testing.assert_allclose(out["relevance_per_feature"].sum(2), out["relevance"], rtol=1e-5, atol=1e-7)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["lrpc.relevance"]) == {"ids": "relevance"}
    described = json.loads(meta["lrpc.relevance_outputs"])
    assert described["relevance"]["kind"] == "token" and described["relevance"]["vocab"] == 11
    assert described["relevance"]["at"] == ["embed"] and described["relevance"]["shape"] == ["batch", "seq"]
    assert described["relevance_per_feature"]["kind"] == "token_feature"
    assert json.loads(meta["lrpc.options"]) == {"per_feature": True, "rule": RULE}


def test_two_lookups_of_the_same_ids_add_up():
    model, w = text_models.classifier(second_table=True)
    proto = lrpc.compile(model, RULE)
    ids = ids_of(3, 6)
    out = run(proto, {"ids": ids})
    expect, _, zt = classifier_oracle(w, ids, second=True)
    oracle.assert_rel_close(out["relevance"], expect, 1e-5)
    np.testing.assert_allclose(out["relevance"].sum(1), zt, rtol=1e-5)
    described = json.loads({p.key: p.value for p in proto.metadata_props}["lrpc.relevance_outputs"])
    assert described["relevance"]["at"] == ["embed", "embed2"]


def test_attention_mask_passes_through():
    model, w = text_models.classifier(mask=True)
    proto = lrpc.compile(model, RULE)
    assert [i.name for i in proto.graph.input] == ["ids", "attention_mask"]
    assert [o.name for o in proto.graph.output] == ["logits", "relevance"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["lrpc.relevance"]) == {"ids": "relevance"}
    ids, mask = ids_of(2, 5), np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int64)
    out = run(proto, {"ids": ids, "attention_mask": mask})
    expect, _, zt = classifier_oracle(w, ids, mask=mask.astype(np.float64))
    oracle.assert_rel_close(out["relevance"], expect, 1e-5)
    assert np.all(out["relevance"][0, 3:] == 0)
    np.testing.assert_allclose(out["relevance"].sum(1), zt, rtol=1e-5)


def test_position_embedding_gets_no_relevance():
    """x = E[ids] + P[:seq], P looked up by a Range (no input): a constant addend, which lrpc's Add gives no
    share (DESIGN.md §10), so R_E = R_x and the ids keep the whole logit."""
    model, w = text_models.classifier(position=True)
    ids = ids_of(2, 4)
    out = run(lrpc.compile(model, RULE), {"ids": ids})
    expect, _, zt = classifier_oracle(w, ids, position=w["P"][:4])
    oracle.assert_rel_close(out["relevance"], expect, 1e-5)
    np.testing.assert_allclose(out["relevance"].sum(1), zt, rtol=1e-5)


def test_bias_absorbs_its_share():
    model, w = text_models.classifier(bias=True)
    ids = ids_of(2, 4)
    out = run(lrpc.compile(model, RULE), {"ids": ids})
    oracle.assert_rel_close(out["relevance"], classifier_oracle(w, ids)[0], 1e-5)


def lm_oracle(w, ids, position=-1, token=None):
    h = np.tanh(w["E"].astype(np.float64)[ids])
    z = h @ w["W"].astype(np.float64)
    at = np.arange(ids.shape[1])[position]
    t = z[:, at].argmax(1) if token is None else np.broadcast_to(token, len(ids))
    zt = z[np.arange(len(ids)), at, t]
    R = np.zeros(ids.shape)
    R[:, at] = (h[:, at] * w["W"][:, t].T).sum(1) * zt / stab(zt)
    return R, zt


@pytest.mark.parametrize(
    "kw, token", [({}, None), ({"target": 3}, 3), ({"position": 1}, None), ({"position": -2, "target": 5}, 5)]
)
def test_lm_head_at_a_position(kw, token):
    model, w = text_models.lm_head()
    proto = lrpc.compile(model, RULE, **kw)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["lrpc.position"] == str(kw.get("position", -1)) and meta["lrpc.classes"] == "13"
    for seq in (3, 7):
        ids = ids_of(2, seq, vocab=13, seed=seq)
        out = run(proto, {"ids": ids})
        expect, zt = lm_oracle(w, ids, kw.get("position", -1), token)
        oracle.assert_rel_close(out["relevance"], expect, 1e-5)
        np.testing.assert_allclose(out["relevance"].sum(1), zt, rtol=1e-5)


def test_lm_head_target_input_chooses_the_token_per_call():
    model, w = text_models.lm_head()
    proto = lrpc.compile(model, RULE, target="input")
    assert [i.name for i in proto.graph.input] == ["ids", "target"]
    ids, tokens = ids_of(2, 5, vocab=13), np.array([4, 9], np.int64)
    out = run(proto, {"ids": ids, "target": tokens})
    oracle.assert_rel_close(out["relevance"], lm_oracle(w, ids, -1, tokens)[0], 1e-5)


def test_lm_head_with_static_seq_keeps_the_whole_tensor_units():
    model, w = text_models.lm_head(seq=4)
    proto = lrpc.compile(model, RULE)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert "lrpc.position" not in meta and meta["lrpc.classes"] == str(4 * 13)
    ids = ids_of(2, 4, vocab=13)
    out = run(proto, {"ids": ids})
    z = np.tanh(w["E"].astype(np.float64)[ids]) @ w["W"]
    np.testing.assert_allclose(out["relevance"].sum(1), z.reshape(2, -1).max(1), rtol=1e-5)


def test_lm_head_all_and_mask_weigh_the_whole_tensor():
    model, _ = text_models.lm_head()
    out = run(lrpc.compile(model, RULE, target="all"), {"ids": ids_of(1, 3, vocab=13)})
    np.testing.assert_allclose(out["relevance"].sum(), out["logits"].sum(), rtol=1e-4)
    with pytest.raises(LrpcError, match="--position 0 selects one position"):
        lrpc.compile(model, RULE, target="all", position=0)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"position": 5}, "has 4 positions"),
        ({"target": 52}, "one token id 0–12"),
    ],
)
def test_lm_head_errors_static(kw, message):
    model, _ = text_models.lm_head(seq=4)
    with pytest.raises(LrpcError, match=message):
        lrpc.compile(model, RULE, **({"position": 0} | kw))


def test_errors():
    with pytest.raises(LrpcError, match=r"'ids' reaches the model through node 'encode' \(OneHot\)"):
        lrpc.compile(text_models.one_hot_model(), RULE)
    model, _ = text_models.classifier()
    with pytest.raises(LrpcError, match="--per-feature applies to token-id inputs"):
        lrpc.compile(oracle.Net((4,), seed=0).gemm(3).model(), RULE, per_feature=True)
    with pytest.raises(LrpcError, match="--position 0: the explained tensor 'logits' has shape"):
        lrpc.compile(model, RULE, position=0)
