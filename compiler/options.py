"""The compile options as one record, read by everything that compiles: `lrpc.compile`, `lrpc compile`,
`inspect` and `bench` (their flags carry the same names), the file's `lrpc.options` entry and
`verify --source`, which compiles the source again from that entry. An option added here reaches all of
them; tests/compiler/test_options.py checks that the API's and the CLI's parameters are these fields.

    options = CompileOptions(rule="epsilon", target="input")
    options.record()                 → '{"rule":"epsilon","target":"input"}'   (lrpc.options: what differs
                                                                                from the defaults)
    CompileOptions.from_record(text, preprocess, folder)   → the same options  (a rule map file comes
                                                                                back as FOLDER/rules.toml)
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, fields

from .errors import LrpcError

# the options plan() takes; the others shape the lowering (method, per_feature) or the file (preprocess)
PLAN_FIELDS = (
    "rule",
    "composite",
    "rule_map",
    "rule_map_file",
    "convention",
    "target",
    "output_name",
    "explain",
    "keep_output_activation",
    "opset",
    "position",
)


@dataclass(frozen=True)
class CompileOptions:
    rule: object = None  # a rule spec ("epsilon:eps=0.25") or a lrpc.rules.Rule
    composite: str | None = None
    rule_map: tuple = ()  # ("PATTERN=RULE", …)
    rule_map_file: str | None = None  # TOML; recorded inline as rule_map_toml
    convention: str = "lrpc"
    target: object = None  # None/"max", a unit index, "input", "all", "mask"
    output_name: str | None = None
    explain: str | None = None
    keep_output_activation: bool = False
    opset: int | None = None
    method: str | None = None
    preprocess: object = None  # recorded apart, as lrpc.preprocess
    per_feature: bool = False
    position: int | None = None

    def plan_options(self) -> dict:
        return {name: getattr(self, name) for name in PLAN_FIELDS}

    def record(self) -> str:
        """lrpc.options: the options that differ from the defaults, key-sorted JSON, a rule map file inlined."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("preprocess", "rule_map_file")}
        values["rule"] = getattr(self.rule, "spec", self.rule)
        values["target"] = None if self.target in (None, "max") else str(self.target)
        values["rule_map"] = list(self.rule_map or [])
        if self.rule_map_file is not None:
            with open(self.rule_map_file, encoding="utf-8") as f:
                values["rule_map_toml"] = f.read()
        defaults = {f.name: f.default for f in fields(self)}
        changed = {k: v for k, v in values.items() if v != (list(defaults[k]) if k == "rule_map" else defaults.get(k))}
        return json.dumps(changed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_record(cls, text: str, preprocess=None, folder: str | None = None) -> CompileOptions:
        """The options lrpc.options records; an inlined rule map is written to FOLDER/rules.toml."""
        values = json.loads(text)
        toml = values.pop("rule_map_toml", None)
        if toml is not None:
            values["rule_map_file"] = os.path.join(folder, "rules.toml")
            with open(values["rule_map_file"], "w", encoding="utf-8") as f:
                f.write(toml)
        try:
            return cls(**{**values, "rule_map": tuple(values.get("rule_map", ())), "preprocess": preprocess})
        except TypeError as e:  # an option lrpc does not have: the entry was edited
            raise LrpcError(
                f"the file's lrpc.options metadata holds what lrpc's compile does not take ({e}); "
                "the file was edited or damaged — recompile it"
            ) from None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CompileOptions:
        """The options among a command's parsed flags (dest names are the field names)."""
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})

    def as_dict(self) -> dict:
        """The fields as keyword arguments of lrpc.compile (shallow: a Rule stays a Rule)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
