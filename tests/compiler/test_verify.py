"""`lrpc verify` / lrpc.verify: good files pass, deliberately broken ones fail, with exit status 1."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import lrpc
from lrpc.cli import main
from lrpc.verify.float64 import as_double, run_double
from lrpc.verify import conserving
from nets import small_cnn

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS_MODEL = ROOT / "models" / "digits_cnn.onnx"


def tampered(proto: onnx.ModelProto, factor: np.ndarray | float) -> onnx.ModelProto:
    """The file with its relevance output multiplied by `factor` (2, or an array holding a NaN)."""
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    graph = broken.graph
    producer = next(n for n in graph.node if "relevance" in n.output)
    producer.output[list(producer.output).index("relevance")] = "relevance_untampered"
    graph.initializer.append(numpy_helper.from_array(np.asarray(factor, np.float32), "tamper_factor"))
    graph.node.append(helper.make_node("Mul", ["relevance_untampered", "tamper_factor"], ["relevance"]))
    return broken


def saved(proto: onnx.ModelProto, path: pathlib.Path) -> pathlib.Path:
    onnx.save(proto, path)
    return path


@pytest.fixture(scope="module")
def bias_free(tmp_path_factory) -> tuple[pathlib.Path, onnx.ModelProto]:
    source = tmp_path_factory.mktemp("src") / "nobias.onnx"
    onnx.save(small_cnn(bias=False), source)
    return source, lrpc.compile(source, rule="epsilon")


def test_a_good_file_passes_with_a_per_sample_report(bias_free, tmp_path, capsys):
    source, proto = bias_free
    path = saved(proto, tmp_path / "e.onnx")
    assert main(["verify", str(path), "--samples", "3", "--source", str(source)]) == 0
    text = capsys.readouterr().out
    assert "PASS    conservation" in text and "PASS    float64" in text and "PASS    source" in text
    assert "byte-identical" in text and text.rstrip().endswith("verified: every check passed")
    report = lrpc.verify(path, samples=3)
    assert report.passed and len(report.rows) == 3
    assert all(abs(row["ratio"] - 1) < 1e-4 and row["error"] < 1e-5 for row in report.rows)


def test_relevance_doubled_fails_conservation(bias_free, tmp_path, capsys):
    path = saved(tampered(bias_free[1], 2.0), tmp_path / "doubled.onnx")
    assert main(["verify", str(path)]) == 1
    text = capsys.readouterr().out
    assert "FAIL    conservation: Σ relevance / S₀ = 2.0000" in text and "FAILED: conservation" in text


def test_nan_in_one_pixel_fails_the_finite_check(bias_free):
    factor = np.ones((1, 2, 8, 8), np.float32)
    factor[0, 1, 3, 4] = np.nan
    report = lrpc.verify(tampered(bias_free[1], factor))
    assert not report.passed
    assert [c.status for c in report.checks if c.name == "finite"] == ["fail"]
    assert all(not row["finite"] for row in report.rows)


def test_source_catches_an_edit_conservation_cannot(tmp_path):
    """EpsilonPlus with biases does not conserve, so only a fresh compile of the source exposes ×2."""
    proto = lrpc.compile(DIGITS_MODEL, composite="EpsilonPlus")
    path = saved(tampered(proto, 2.0), tmp_path / "doubled.onnx")
    report = lrpc.verify(path, source=DIGITS_MODEL)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == {"finite": "pass", "source": "pass", "float64": "fail", "conservation": "info"}
    assert all(0.99 < row["error"] < 1.01 for row in report.rows)  # |2R − R| / |R| = 1


def test_a_different_source_is_named(bias_free, tmp_path):
    report = lrpc.verify(saved(bias_free[1], tmp_path / "e.onnx"), source=DIGITS_MODEL)
    assert not report.passed and "was compiled from SHA-256" in report.text()


def test_rule_maps_and_preprocessing_recompile_identically(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('composite = "EpsilonPlus"\n[rules]\nfirst = "zbox:low=0,high=1"\n')
    path = tmp_path / "e.onnx"
    lrpc.compile(DIGITS_MODEL, rule_map_file=rules, target=3, preprocess="scale=1/255", output=path)
    rules.unlink()  # the file records the TOML itself
    report = lrpc.verify(path, source=DIGITS_MODEL, samples=2)
    assert report.passed and "byte-identical" in report.text(), report.text()


def test_a_check_that_cannot_run_is_not_a_pass():
    """Random methods draw other numbers in every runtime: the float64 comparison cannot run, and the
    verdict says so instead of 'every check passed'."""
    report = lrpc.verify(lrpc.compile(small_cnn(), method="smoothgrad:samples=3"), samples=2)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["float64"] == "skipped" and statuses["conservation"] == "info" and statuses["finite"] == "pass"
    assert not report.passed
    text = report.text()
    assert "NOT RUN float64" in text and text.splitlines()[-1].startswith("NOT VERIFIED: float64 could not run")
    assert "every check passed" not in text


def test_given_inputs_and_target_input_files():
    proto = lrpc.compile(small_cnn(bias=False), rule="zero", target="input", convention="zennit")
    x = np.random.default_rng(5).standard_normal((3, 2, 8, 8)).astype(np.float32)
    report = lrpc.verify(proto, inputs=x)
    assert report.passed and len(report.rows) == 3
    assert [row["start"] for row in report.rows] == [1.0, 1.0, 1.0]  # Zennit's convention starts at 1


def test_what_conserves():
    assert conserving(lrpc.compile(small_cnn(bias=False), rule="epsilon"), _meta(rule="epsilon:eps=1e-06"))[0]
    biased = lrpc.compile(small_cnn(), rule="epsilon")
    assert conserving(biased, _meta(biased))[1].endswith("adds a bias")
    assert "only zero and epsilon" in conserving(biased, _meta(rule="epsilon:eps=0.25"))[1]
    assert not conserving(biased, _meta(rule="zplus"))[0]


def _meta(proto=None, **changes):
    meta = {p.key: p.value for p in (proto or lrpc.compile(small_cnn(bias=False), rule="epsilon")).metadata_props}
    return {**meta, **{f"lrpc.{k}": v for k, v in changes.items()}}


def test_compile_verify_writes_only_a_verified_file(bias_free, tmp_path, capsys):
    source = bias_free[0]
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    assert main(["compile", str(source), "--rule", "epsilon", "--verify", "-o", str(good)]) == 0
    assert "verified: every check passed" in capsys.readouterr().out and good.exists()
    # a tolerance of 1e-12 no float32 file meets: the check fails and nothing is written
    assert main(["compile", str(source), "--verify", "--verify-tolerance", "1e-12", "-o", str(bad)]) == 1
    assert "not written: verify failed" in capsys.readouterr().err and not bad.exists()


def test_not_an_explained_file_is_an_error(capsys):
    assert main(["verify", str(DIGITS_MODEL)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lrpc: error: ") and "is not an explained file" in error


def test_the_double_graph_agrees_with_the_float_one():
    proto = lrpc.compile(small_cnn(), rule="alpha2beta1")
    double = as_double(proto)
    assert all(t.data_type != onnx.TensorProto.FLOAT for t in double.graph.initializer)
    x = np.random.default_rng(0).random((2, 2, 8, 8)).astype(np.float32)
    want = run_double(proto, {"x": x}, ["relevance"])["relevance"]
    assert want.dtype == np.float64
    got = lrpc.verify(proto, inputs=x).rows
    assert max(row["error"] for row in got) < 1e-5


def test_attention_with_a_free_sequence_axis_and_token_ids_is_verified(tmp_path):
    """A free axis besides the batch (a sequence) takes the length FREE_AXIS; token ids are drawn from the
    vocabulary, an attention mask is all ones; a doubled relevance fails the float64 check."""
    import text_models
    from oracle.attention import Block

    source = Block(kv_heads=1).onnx_model().SerializeToString()
    attention = lrpc.compile(source)
    report = lrpc.verify(attention, samples=2, source=source)
    assert report.passed and "free axes 8 long" in report.header[1], report.header
    assert not lrpc.verify(tampered(attention, 2.0), samples=2, source=source).passed
    tokens = lrpc.compile(text_models.classifier(mask=True)[0], rule="epsilon")
    assert lrpc.verify(tokens, samples=3).passed
