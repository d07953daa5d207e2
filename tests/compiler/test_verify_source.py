"""verify --source reads the file's outputs as a fresh compile of the source defines them, and fails the
"source" check when the file's own metadata says they mean something else (compiler/verify/source.py)."""

from __future__ import annotations

import json
import pathlib

import onnx
import pytest

import lrpc
from nets import saved_and_compiled, small_cnn


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    return saved_and_compiled(tmp_path_factory.mktemp("source"), small_cnn(), "epsilon")


def edited(path: pathlib.Path, out: pathlib.Path, entries: dict[str, str], edit_graph=None) -> pathlib.Path:
    proto = onnx.load(path)
    for p in proto.metadata_props:
        p.value = entries.get(p.key, p.value)
    if edit_graph is not None:
        edit_graph(proto.graph)
    onnx.save(proto, out)
    return out


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def detail(report, name: str) -> str:
    return next(c.detail for c in report.checks if c.name == name)


def test_relevance_pointed_at_another_output_fails(compiled, tmp_path):
    """Read through the file's own lrpc.relevance, both the file and the fresh compile returned 'probs' as
    the relevance, and the file passed."""
    source, path = compiled
    report = lrpc.verify(
        edited(path, tmp_path / "e.onnx", {"lrpc.relevance": '{"x": "probs"}'}), source=source, samples=2
    )
    assert statuses(report) == {"finite": "pass", "source": "fail", "float64": "pass", "conservation": "info"}
    text = detail(report, "source")
    assert "the file's lrpc.relevance entry differs from a fresh compile's" in text, text
    assert """file '{"x": "probs"}', fresh '{"x": "relevance"}'""" in text, text
    assert not report.passed and report.verdict() == "FAILED: source"


def test_every_differing_entry_is_named(compiled, tmp_path):
    source, path = compiled
    report = lrpc.verify(
        edited(path, tmp_path / "e.onnx", {"lrpc.target": "fixed:2", "lrpc.rule": "zplus"}), source=source, samples=2
    )
    text = detail(report, "source")
    assert statuses(report)["source"] == "fail" and "lrpc.rule, lrpc.target entries differ" in text, text
    assert "lrpc.target: file 'fixed:2', fresh 'max'" in text, text


def test_a_renamed_relevance_output_is_not_comparable(compiled, tmp_path):
    """Output and metadata renamed together: before, the reference evaluator was asked for 'rel' and the
    float64 check was NOT RUN; it is a failure of the file."""

    def rename(graph):
        for node in graph.node:
            node.output[:] = ["rel" if o == "relevance" else o for o in node.output]
        next(o for o in graph.output if o.name == "relevance").name = "rel"

    source, path = compiled
    out = edited(path, tmp_path / "e.onnx", {"lrpc.relevance": json.dumps({"x": "rel"})}, rename)
    report = lrpc.verify(out, source=source, samples=2)
    assert statuses(report) == {"source": "fail", "float64": "fail"}
    assert "the file has no relevance, which a fresh compile of the source has" in detail(report, "float64")


def test_different_bytes_alone_are_reported_not_judged(compiled, tmp_path):
    """A file whose bytes are not a fresh compile's, same metadata (here a doc string): the note says why
    that is not a failure by itself, and float64 judges what it computes."""

    def document(graph):
        graph.node[0].doc_string = "annotated after compile"

    source, path = compiled
    report = lrpc.verify(edited(path, tmp_path / "e.onnx", {}, document), source=source, samples=2)
    assert statuses(report) == {"finite": "pass", "source": "pass", "float64": "pass", "conservation": "info"}
    text = detail(report, "source")
    assert "bytes differ from the file's" in text and "not judged" in text and "tf2onnx" in text, text
