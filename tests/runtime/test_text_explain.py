"""`lrpc explain` on token ids (lrpc_runtime.text): .npy and .json inputs, per-token relevance in the table,
HTML and PNG pages with --tokens, the no-overwrite rule, and one-line errors for bad ids."""

from __future__ import annotations

import csv
import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

import lrpc
from lrpc.cli import main
from lrpc_runtime import Explainer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "compiler"))
import text_models  # noqa: E402

RULE = "epsilon:eps=1e-9"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    lrpc.compile(text_models.classifier(mask=True)[0], RULE, per_feature=True, output=d / "cls.onnx")
    lrpc.compile(text_models.lm_head()[0], RULE, output=d / "lm.onnx")
    np.save(d / "batch.npy", np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int64))
    np.save(d / "one.npy", np.array([3, 1, 2], np.int32))
    (d / "ids.json").write_text(json.dumps([[1, 2, 3], [4, 5, 6, 7, 8]]))
    (d / "vocab.txt").write_text("".join(f"tok<{i}>\n" for i in range(13)))
    (d / "vocab.json").write_text(json.dumps([f"w{i}" for i in range(13)]))
    return d


def test_explainer_keeps_the_per_feature_map_out_of_the_outputs(files):
    ex = Explainer(files / "cls.onnx")
    ids = np.array([[1, 2, 3]], np.int64)
    result = ex.explain({"ids": ids, "attention_mask": np.ones_like(ids)})
    assert list(result.outputs) == ["logits"] and result.relevance_map.shape == (1, 3)
    np.testing.assert_allclose(result.relevance_map.sum(), result.output.max(), rtol=1e-5)


def test_table_with_npy_and_json(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                str(files / "cls.onnx"),
                str(files / "batch.npy"),
                str(files / "ids.json"),
                str(files / "one.npy"),
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    assert "explained 5 samples of token ids" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["input"] for r in rows] == ["batch_0", "batch_1", "ids_0", "ids_1", "one"]
    assert [int(r["tokens"]) for r in rows] == [4, 4, 3, 5, 3]
    for r in rows:  # per-token values, summing to the explained logit (bias-free, ε → 0)
        values = [float(v) for v in r["relevance"].split()]
        assert len(values) == int(r["tokens"])
        assert sum(values) == pytest.approx(float(r["score"]), rel=1e-4)
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv"]


@pytest.mark.parametrize("vocab", ["vocab.txt", "vocab.json"])
def test_tokens_write_html_and_png(files, tmp_path, vocab):
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                str(files / "lm.onnx"),
                str(files / "ids.json"),
                "-o",
                str(out),
                "-q",
                "--tokens",
                str(files / vocab),
                "--format",
                "json",
            ]
        )
        == 0
    )
    rows = json.loads((out / "predictions.json").read_text())
    assert [r["html"] for r in rows] == ["ids_0.html", "ids_1.html"]
    page = (out / "ids_1.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>ids_1: relevance per token" in page
    assert page.count('<span title="id ') == 5
    if vocab == "vocab.txt":
        assert "tok&lt;8&gt;" in page  # escaped
    assert rows[1]["relevance"][-1] == pytest.approx(rows[1]["score"], rel=1e-4)  # the last position
    with Image.open(out / "ids_1.png") as png:
        assert png.format == "PNG" and png.size[0] == 800


def test_no_overwrite_without_the_flag(files, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "explain",
        str(files / "cls.onnx"),
        str(files / "one.npy"),
        "-o",
        str(out),
        "-q",
        "--tokens",
        str(files / "vocab.txt"),
    ]
    assert main(args) == 0
    before = (out / "one.html").read_bytes()
    assert main([*args[:2], str(files / "batch.npy"), *args[3:]]) == 2
    assert "not empty; add --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["one.html", "one.png", "predictions.csv"]
    assert (out / "one.html").read_bytes() == before
    assert main([*args[:2], str(files / "batch.npy"), *args[3:], "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir())[:2] == ["batch_0.html", "batch_0.png"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left


@pytest.mark.parametrize(
    "content, message",
    [
        (np.array([[1.0, 2.0]]), "token ids must be integers, got dtype float64"),
        (np.zeros((1, 2, 3), np.int64), "token ids of shape [1, 2, 3]; give [seq]"),
        (np.array([1, 11]), "token id 11 is outside the vocabulary (ids 0–10)"),
        ([1, -1], "token id -1 is outside the vocabulary"),
        ({"ids": [1]}, "holds a list of integers or a list of such lists"),
    ],
)
def test_bad_ids_are_one_line_errors(files, tmp_path, capsys, content, message):
    path = tmp_path / ("bad.npy" if isinstance(content, np.ndarray) else "bad.json")
    np.save(path, content) if isinstance(content, np.ndarray) else path.write_text(json.dumps(content))
    assert main(["explain", str(files / "cls.onnx"), str(path), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_token_ids_beyond_the_given_vocabulary(files, tmp_path, capsys):
    (tmp_path / "small.txt").write_text("a\nb\n")
    assert (
        main(
            [
                "explain",
                str(files / "cls.onnx"),
                str(files / "one.npy"),
                "-o",
                str(tmp_path / "out"),
                "-q",
                "--tokens",
                str(tmp_path / "small.txt"),
            ]
        )
        == 2
    )
    assert "token id 3 is outside the vocabulary (ids 0–1)" in capsys.readouterr().err


def test_tokens_on_an_image_model_is_refused(tmp_path, capsys):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "compiler"))
    import oracle

    lrpc.compile(oracle.Net((4,), seed=0).gemm(3).model(), RULE, output=tmp_path / "x.onnx")
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    assert (
        main(
            [
                "explain",
                str(tmp_path / "x.onnx"),
                str(tmp_path / "x.npy"),
                "-o",
                str(tmp_path / "o"),
                "--tokens",
                str(tmp_path / "x.npy"),
            ]
        )
        == 2
    )
    assert "has no token-id input" in capsys.readouterr().err
