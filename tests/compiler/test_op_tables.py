"""The op tables agree: every op with an LRP rule has a gradient rule, a TensorFlow implementation in the
SavedModel emitter (read here without TensorFlow: the @tf_op functions from their source, and the ops
declared in compiler/activations.py, each of which carries its TF expression), a line in the README and a
float64 oracle case (tests/oracle/: an op its ONNX reader handles or one in the graphs of the oracle cases
in tests/compiler/test_rules_*.py), unless ORACLE_GAPS names it; every op a rule *emits* is in the
TensorFlow table too. A failure names the op and the file that lacks it (docs/adding-an-op.md says what
each file holds)."""

from __future__ import annotations

import ast
import functools
import importlib
import re
from pathlib import Path

import pytest

import lrpc
from lrpc.activations import ELEMENTWISE
from lrpc.methods import GRADIENTS
from lrpc.rules import RULES

ROOT = Path(__file__).resolve().parents[2]
SAVEDMODEL = sorted((ROOT / "compiler").glob("savedmodel*.py")) + sorted((ROOT / "compiler").glob("savedmodel/*.py"))


def _strings(node) -> list[str]:
    if isinstance(node, ast.Dict):
        return [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def tensorflow_table() -> set[str]:
    """The op types registered with @tf_op(...) in the SavedModel emitter, literal or `*NAME` of a module-level
    dict/tuple/set of names, and those declared in activations.py (savedmodel/ops.py registers their TF
    expressions)."""
    ops = {op for op, e in ELEMENTWISE.items() if callable(e.tf)}
    for path in SAVEDMODEL:
        tree = ast.parse(path.read_text())
        named = {
            t.id: _strings(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "tf_op":
                for arg in call.args:
                    if isinstance(arg, ast.Constant):
                        ops.add(arg.value)
                    elif isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name):
                        ops.update(named.get(arg.value.id, []))
    return ops


# ops with an LRP rule that no float64 oracle case runs yet (each checked by other tests, named here)
ORACLE_GAPS = {
    "Cast": "a float-to-float Cast routes; test_attention_rules.py and text_models.py run it, not against the oracle",
    "Neg": "routes with a sign flip; tests/compiler/test_schedule.py compiles it",
    "GatherElements": "its indices carry the batch axis, which the oracle's batched nets (constant indices) lack",
    "GatherND": "its indices carry the batch axis, which the oracle's batched nets (constant indices) lack",
    "QuantizeLinear": "tests/compiler/test_quantized.py compares a QDQ model with its float twin",
    "DequantizeLinear": "tests/compiler/test_quantized.py compares a QDQ model with its float twin",
}
ORACLE_CASES = ["test_rules_combine", "test_rules_gates_norms", "test_rules_routing", "test_rules_resample"]


@functools.cache
def oracle_table() -> frozenset[str]:
    """The op types the float64 oracle compares lrpc on: those its ONNX reader handles, those in the graphs
    of the oracle cases (GraphNet builders of tests/compiler/test_rules_*.py), and the attention block's."""
    from oracle.attention import Block
    from oracle.onnx_reader import HANDLERS

    ops = set(HANDLERS) | {n.op_type for n in Block().onnx_model().graph.node}
    for module in map(importlib.import_module, ORACLE_CASES):
        for cases in (v for v in vars(module).values() if type(v).__name__ == "Cases"):
            for name in cases.builders:
                net, out = cases.net(name)
                ops |= {n.op_type for n in net.model(out).graph.node}
    return frozenset(ops)


@pytest.mark.parametrize("op", sorted(RULES))
def test_lrp_op_has_a_float64_oracle_case(op):
    if op in ORACLE_GAPS:
        assert op not in oracle_table(), f"{op} now has an oracle case: remove it from ORACLE_GAPS"
        pytest.skip(f"no float64 oracle case for {op} yet: {ORACLE_GAPS[op]}")
    assert op in oracle_table(), (
        f"{op} has an LRP rule but the float64 oracle never runs it: add it to tests/oracle/ (modern.py, ops.py "
        "or onnx_reader.py's HANDLERS) and a case to a tests/compiler/test_rules_*.py (docs/adding-an-op.md, step 5)"
    )


def test_the_tensorflow_table_is_read():
    table = tensorflow_table()
    assert {"Conv", "Add", "Relu", "Reshape", "ReduceSum", "MaxPool"} <= table, sorted(table)


def test_the_declared_ops_are_in_every_table():
    declared = sorted(ELEMENTWISE)
    assert {"Tanh", "Gelu", "Erf"} <= set(declared), declared
    assert all(op in GRADIENTS for op in declared)
    assert all((op in RULES) == e.passes_relevance for op, e in ELEMENTWISE.items())


@pytest.mark.parametrize("op", sorted(RULES))
def test_lrp_op_has_a_gradient_rule(op):
    assert op in GRADIENTS, (
        f"{op} has an LRP rule but no gradient rule: compiler/methods/ lacks it — declare an element-wise op "
        "with activation(...) in compiler/activations.py, register a routing rule with "
        "@relevance_rule(..., exact_gradient=True), or write a @gradient_rule in compiler/methods/"
    )


@pytest.mark.parametrize("op", sorted(set(RULES) | set(GRADIENTS)))
def test_explained_op_has_a_tensorflow_implementation(op):
    """A model op that lrpc explains stays in the explained graph, so --format savedmodel must run it."""
    assert op in tensorflow_table(), (
        f"{op} is explained but the SavedModel emitter lacks it: compiler/savedmodel/ has no @tf_op({op!r}) "
        "(or declare it in compiler/activations.py with its TF expression)"
    )


def _readme() -> str:
    return (ROOT / "README.md").read_text()


@pytest.mark.parametrize("op", sorted(RULES))
def test_lrp_op_is_in_the_readme(op):
    assert re.search(rf"\b{op}\b", _readme(), re.IGNORECASE), (
        f"{op} has an LRP rule but README.md never names it: add it to the list of operators under ## Rules"
    )


def test_the_readme_activation_list_names_only_ops_lrpc_passes():
    """README's line of activations that pass relevance names no op without the rule (its names are
    case-insensitive: ReLU, tanh)."""
    line = next(line for line in _readme().splitlines() if line.startswith("- ReLU, "))
    listed = re.split(r", | and ", line[2 : line.index(" pass relevance")])
    known = {op.lower(): op for op in RULES}
    assert all(name.lower() in known for name in listed), [n for n in listed if n.lower() not in known]
    assert all(RULES[known[name.lower()]] is RULES["Relu"] for name in listed)


def test_ops_the_rules_emit_have_a_tensorflow_implementation(tmp_path):
    """Compile the modern test nets and an attention block under several rules and methods: every op type in
    the result is in the TensorFlow table."""
    import test_rules_gates_norms as modern

    emitted = set()
    for name in modern.CASES.builders:
        net, out = modern.CASES.net(name)
        for options in ({"rule": "epsilon"}, {"rule": "zplus", "rule_map": ["product=half"]}, {"method": "gradient"}):
            try:
                proto = lrpc.compile(net.model(out), **options)
            except lrpc.LrpcError:
                continue  # e.g. a rule map whose pattern matches nothing in this net
            emitted |= {n.op_type for n in proto.graph.node}
    from oracle.attention import Block

    for kv_heads in (1, 2):
        for options in ({"composite": "AttnLRP"}, {"composite": "CPLRP"}, {"method": "gradient"}):
            emitted |= {n.op_type for n in lrpc.compile(Block(kv_heads=kv_heads).onnx_model(), **options).graph.node}
    missing = sorted(emitted - tensorflow_table())
    assert not missing, f"the explained graphs use {missing}, which the SavedModel emitter lacks"


def _literal_sets(path: Path):
    """(line, names) of every tuple, list or set literal of three or more strings in a source file."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = _strings(node) if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else []
        if len(names) >= 3 and len(names) == len(node.elts):
            yield node.lineno, frozenset(names)


def test_each_op_family_is_written_once():
    """The op families of lrpc/ops.py are read from there: no other source file spells one out again."""
    from lrpc import ops

    families = {frozenset(v): k for k, v in vars(ops).items() if k.endswith("_OPS") and len(v) >= 3}
    again = [
        f"{path.relative_to(ROOT)}:{line} writes out {families[names]}: import it from lrpc.ops"
        for path in sorted((ROOT / "compiler").rglob("*.py"))
        if path.name != "ops.py" or path.parent.name != "compiler"
        for line, names in _literal_sets(path)
        if names in families
    ]
    assert not again, "\n".join(again)
    assert len(families) >= 4, "the families of lrpc/ops.py were not read"


def test_the_linear_layers_are_the_linear_ops():
    from lrpc.ops import LINEAR_OPS
    from lrpc.rules.linear_layers import LAYERS

    assert sorted(LAYERS) == sorted(LINEAR_OPS)
