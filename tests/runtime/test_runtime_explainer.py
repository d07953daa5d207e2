"""Explainer.explain / run on hand-built explained graphs: values, batching, targets, inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lrpc_runtime import Explainer, Explanation


def test_outputs_and_relevance_values(single_model, weights, rng):
    x = rng.standard_normal((5, 4)).astype(np.float32)
    ex = Explainer(single_model("max"))
    result = ex.explain(x)
    assert isinstance(result, Explanation)
    assert list(result.outputs) == ["logits"]
    assert list(result.relevance) == ["input"]
    np.testing.assert_allclose(result.output, x @ weights["W"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.relevance_map, x * 2, rtol=1e-6)
    assert result.relevance_map.shape == x.shape


def test_properties(single_model):
    ex = Explainer(single_model("fixed:2"))
    assert ex.input_names == ["input"]
    assert ex.output_names == ["logits"]
    assert ex.relevance_names == {"input": "relevance"}
    assert ex.target_mode == "fixed:2"
    assert ex.metadata.fixed_target == 2
    assert ex.rule == "epsilon:eps=1e-06"
    assert ex.version == "0.1.0"
    assert ex.providers == ["CPUExecutionProvider"]
    assert "Explainer(" in repr(ex)


def test_model_from_path(single_model, tmp_path: Path, rng):
    path = tmp_path / "m.onnx"
    path.write_bytes(single_model("max"))
    x = rng.standard_normal((2, 4)).astype(np.float32)
    for source in (path, str(path)):
        ex = Explainer(source, threads=1)
        np.testing.assert_allclose(ex.explain(x).relevance_map, x * 2, rtol=1e-6)


def test_batching_matches_single_run(single_model, rng):
    x = rng.standard_normal((10, 4)).astype(np.float32)
    whole = Explainer(single_model("max"), batch_size=64).explain(x)
    chunked = Explainer(single_model("max"), batch_size=3).explain(x)
    np.testing.assert_array_equal(chunked.output, whole.output)
    np.testing.assert_array_equal(chunked.relevance_map, whole.relevance_map)
    assert chunked.output.shape == (10, 3)


def test_fixed_batch_axis_runs_per_sample(single_model, rng):
    x = rng.standard_normal((4, 4)).astype(np.float32)
    ex = Explainer(single_model("max", batch=1))
    np.testing.assert_allclose(ex.explain(x).relevance_map, x * 2, rtol=1e-6)


def test_float64_and_int_inputs_are_cast(single_model):
    ex = Explainer(single_model("max"))
    x64 = np.arange(8, dtype=np.float64).reshape(2, 4)
    r = ex.explain(x64).relevance_map
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r, x64 * 2)
    np.testing.assert_array_equal(ex.explain(x64.astype(np.uint8)).relevance_map, x64 * 2)
    np.testing.assert_array_equal(ex.explain(x64.tolist()).relevance_map, x64 * 2)


def test_target_input_mode(single_model, rng):
    x = rng.standard_normal((7, 4)).astype(np.float32)
    ex = Explainer(single_model("input"), batch_size=3)
    assert ex.target_mode == "input"
    assert ex.input_names == ["input"]  # the target input is not a model input
    per_sample = np.array([0, 1, 2, 0, 1, 2, 5])
    r = ex.explain(x, target=per_sample).relevance_map
    np.testing.assert_allclose(r, x * per_sample[:, None], rtol=1e-6)
    r = ex.explain(x, target=2).relevance_map
    np.testing.assert_allclose(r, x * 2, rtol=1e-6)
    r = ex.explain(x, target=np.int32(3)).relevance_map
    np.testing.assert_allclose(r, x * 3, rtol=1e-6)
    r = ex.explain(x, target=per_sample.tolist()).relevance_map
    np.testing.assert_allclose(r, x * per_sample[:, None], rtol=1e-6)


def test_target_required_in_input_mode(single_model):
    ex = Explainer(single_model("input"))
    with pytest.raises(ValueError, match="--target input"):
        ex.explain(np.zeros((2, 4)))


@pytest.mark.parametrize("mode", ["max", "fixed:1"])
def test_target_forbidden_otherwise(single_model, mode):
    ex = Explainer(single_model(mode))
    with pytest.raises(ValueError, match=f"target mode '{mode}'.*lrpc compile --target input"):
        ex.explain(np.zeros((2, 4)), target=1)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (np.array([0, 1, 2]), r"shape \[2\]"),
        (np.array([[0], [1]]), r"shape \[2\]"),
        (np.array([0.0, 1.0]), "integer"),
        (1.5, "integer"),
        (True, "bool"),
        ("1", "integer"),
        (np.array([0, -1]), ">= 0"),
    ],
)
def test_bad_targets(single_model, target, match):
    ex = Explainer(single_model("input"))
    with pytest.raises(ValueError, match=match):
        ex.explain(np.zeros((2, 4)), target=target)


def test_dict_inputs(double_model, weights, rng):
    a = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal((6, 2)).astype(np.float32)
    ex = Explainer(double_model, batch_size=4)
    assert ex.input_names == ["a", "b"]
    assert ex.output_names == ["logits"]
    assert ex.relevance_names == {"a": "relevance_a", "b": "relevance_b"}
    result = ex.explain({"b": b, "a": a})
    expected = a @ weights["WA"] + b @ weights["WB"]
    np.testing.assert_allclose(result.output, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.relevance["a"], a * 2, rtol=1e-6)
    np.testing.assert_allclose(result.relevance["b"], b * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="exactly one explained input"):
        _ = result.relevance_map


def test_input_validation(double_model, single_model):
    ex = Explainer(double_model)
    a, b = np.zeros((3, 4)), np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"missing inputs \['b'\]"):
        ex.explain({"a": a})
    with pytest.raises(ValueError, match=r"unknown inputs \['c'\]"):
        ex.explain({"a": a, "b": b, "c": b})
    with pytest.raises(ValueError, match="pass a dict"):
        ex.explain(a)
    with pytest.raises(ValueError, match="share the batch size"):
        ex.explain({"a": a, "b": np.zeros((2, 2))})
    one = Explainer(single_model("max"))
    with pytest.raises(ValueError, match=r"add the batch axis"):
        one.explain(np.zeros(4))
    with pytest.raises(ValueError, match="axis 1 must have size 4"):
        one.explain(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="empty"):
        one.explain(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="cannot be converted"):
        one.explain(np.array([["a"] * 4]))


def test_constructor_validation(single_model):
    with pytest.raises(ValueError, match="batch_size"):
        Explainer(single_model("max"), batch_size=0)
    with pytest.raises(ValueError, match="device"):
        Explainer(single_model("max"), device="tpu")
    with pytest.raises(ValueError, match="threads"):
        Explainer(single_model("max"), threads=-1)


def test_raw_run(single_model):
    ex = Explainer(single_model("input"))
    x = np.ones((2, 4), dtype=np.float32)
    out = ex.run({"input": x, "target": np.array([1, 3], dtype=np.int64)})
    assert list(out) == ["logits", "relevance"]
    np.testing.assert_allclose(out["relevance"], [[1] * 4, [3] * 4])


def test_low_memory_turns_weight_prepacking_off_and_keeps_the_numbers(single_model, rng):
    from lrpc_runtime.session import NO_PREPACKING

    x = rng.standard_normal((6, 4)).astype(np.float32)
    default, low = Explainer(single_model("max")), Explainer(single_model("max"), low_memory=True)

    def prepacking_off(ex) -> bool:
        try:
            return ex._session.get_session_options().get_session_config_entry(NO_PREPACKING) == "1"
        except RuntimeError:  # onnxruntime: no such entry set
            return False

    assert prepacking_off(low) and not prepacking_off(default)
    np.testing.assert_allclose(low.explain(x).relevance_map, default.explain(x).relevance_map, rtol=1e-6)
