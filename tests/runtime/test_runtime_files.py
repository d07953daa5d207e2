"""explain_files on the hand-built feature-vector model: no picture for a vector, the table still written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lrpc_runtime import Explainer, explain_files


def test_feature_vectors_get_a_table_and_no_pictures(single_model, tmp_path, rng):
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.save(tmp_path / "rows.npy", x)
    rows = explain_files(
        single_model("max"), [tmp_path / "rows.npy"], tmp_path / "out", table="json", batch_size=2, progress=False
    )
    assert [r["heatmap"] for r in rows] == [None] * 5
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predictions.json"]
    saved = json.loads((tmp_path / "out" / "predictions.json").read_text())
    np.testing.assert_allclose([r["relevance_sum"] for r in saved], (2 * x).sum(1), rtol=1e-5)
    assert [r["target"] for r in saved] == ["max"] * 5  # no lrpc.output: the explained unit is not named
    assert [r["predicted"] for r in saved] == Explainer(single_model("max")).explain(x).output.argmax(1).tolist()


@pytest.mark.parametrize(
    "kwargs, message", [({"style": "sketch"}, "style must be one of"), ({"table": "xlsx"}, "table must be csv or json")]
)
def test_bad_arguments(single_model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        explain_files(single_model("max"), [tmp_path], tmp_path / "out", **kwargs)


def test_two_input_models_are_refused(double_model, tmp_path):
    with pytest.raises(ValueError, match="needs a single-input model"):
        explain_files(double_model, [tmp_path / "in"], tmp_path / "out")
