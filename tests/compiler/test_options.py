"""The compile options are one record (lrpc/options.py): lrpc.compile's and plan's parameters, the CLI's
flags and the lrpc.options entry all hold exactly its fields, so an option added in one place and missed
in another fails here instead of silently breaking `verify --source`."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields

import onnx
import pytest

import lrpc
from lrpc.api import plan
from lrpc.cli_parser import parser as _parser
from lrpc.options import PLAN_FIELDS, CompileOptions
from nets import small_cnn

FIELDS = {f.name for f in fields(CompileOptions)}


def keywords(function, *besides) -> set[str]:
    return set(inspect.signature(function).parameters) - {"model", *besides}


def test_the_api_takes_exactly_the_record():
    assert keywords(lrpc.compile, "output", "log", "overwrite") == FIELDS
    assert keywords(plan, "log") == set(PLAN_FIELDS)


def test_each_command_has_a_flag_for_each_option_it_uses():
    commands = _parser()._subparsers._group_actions[0].choices
    dests = {name: {a.dest for a in commands[name]._actions} for name in ("compile", "inspect", "bench")}
    assert FIELDS <= dests["compile"]
    for name in ("inspect", "bench"):
        assert {*PLAN_FIELDS, "method"} <= dests[name], name


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rule": "epsilon:eps=0.25", "target": 3},
        {"composite": "EpsilonGammaBox:low=-3,high=3", "opset": 18},
        {"rule_map": ("conv1=flat", "fc*=epsilon"), "convention": "zennit", "target": "input"},
        {"method": "integratedgradients:steps=4,baseline=0", "output_name": "probs"},
        {"explain": "r2", "keep_output_activation": False, "target": "all"},
    ],
)
def test_the_record_compiles_to_the_same_file(options, tmp_path):
    first = lrpc.compile(small_cnn(), **options)
    meta = {p.key: p.value for p in first.metadata_props}
    again = CompileOptions.from_record(meta["lrpc.options"], None, str(tmp_path))
    assert lrpc.compile(small_cnn(), **again.as_dict()).SerializeToString() == first.SerializeToString()
    recorded = json.loads(meta["lrpc.options"])
    assert set(recorded) <= FIELDS and all(k in recorded for k, v in options.items() if v), recorded


def test_a_rule_map_file_is_recorded_inline_and_written_back(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('rule = "epsilon"\n[rules]\nconv1 = "flat"\n')
    first = lrpc.compile(small_cnn(), rule_map_file=str(rules))
    record = {p.key: p.value for p in first.metadata_props}["lrpc.options"]
    assert "rule_map_toml" in json.loads(record) and str(tmp_path) not in record  # no paths in the file
    folder = tmp_path / "again"
    folder.mkdir()
    again = CompileOptions.from_record(record, None, str(folder))
    assert onnx.load_from_string(lrpc.compile(small_cnn(), **again.as_dict()).SerializeToString()) == first
