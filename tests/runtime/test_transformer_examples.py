"""The README's transformer examples end to end: models/tiny_transformers.py exports seeded tiny BERT, GPT-2
and ViT with torch.export, `lrpc compile` explains them (AttnLRP by default, CPLRP), `lrpc explain` writes
the per-token table with HTML and PNG pages and the ViT heatmap; relevance sums stay near the score."""

from __future__ import annotations

import csv
import pathlib
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
from PIL import Image  # noqa: E402

from lrpc.cli import main  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "models"))
pytestmark = [pytest.mark.slow, pytest.mark.torch, pytest.mark.filterwarnings("ignore")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import tiny_transformers

    d = tmp_path_factory.mktemp("tiny")
    tiny_transformers.main(["--out", str(d)])
    return d


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name, options", [("bert", []), ("gpt2", ["--composite", "CPLRP"])])
def test_text_example(tiny, tmp_path, name, options):
    explained = tmp_path / f"{name}_x.onnx"
    assert main(["compile", str(tiny / f"{name}.onnx"), "-o", str(explained), *options]) == 0
    out = tmp_path / "out"
    assert (
        main(
            ["explain", str(explained), str(tiny / "prompt.json"), "--tokens", str(tiny / "vocab.txt"), "-o", str(out)]
        )
        == 0
    )
    rows = _rows(out / "predictions.csv")
    assert [int(r["tokens"]) for r in rows] == [7, 5]  # the two prompts' lengths: one file, two lengths
    for r in rows:
        values = [float(v) for v in r["relevance"].split()]
        assert len(values) == int(r["tokens"])
        assert abs(sum(values) - float(r["relevance_sum"])) < 1e-4
        assert Image.open(out / r["png"]).size[0] > 0 and "<span" in (out / r["html"]).read_text()


def test_vit_example(tiny, tmp_path):
    explained = tmp_path / "vit_x.onnx"
    assert main(["compile", str(tiny / "vit.onnx"), "-o", str(explained), "--preprocess", "scale=1/255"]) == 0
    out = tmp_path / "out"
    assert main(["explain", str(explained), str(tiny / "image.png"), "-o", str(out)]) == 0
    assert Image.open(out / "image.png").size[1] >= 32
    assert len(_rows(out / "predictions.csv")) == 1
