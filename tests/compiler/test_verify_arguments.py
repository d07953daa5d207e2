"""verify refuses what it cannot check before it allocates or runs anything: a sample count beyond its
bounds, a tolerance that is not a finite positive number, lrpc.* metadata that is not what lrpc wrote."""

from __future__ import annotations

import pathlib

import onnx
import pytest

import lrpc
from lrpc.cli import main
from nets import small_cnn


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("arguments") / "e.onnx"
    lrpc.compile(small_cnn(), rule="epsilon", output=path)
    return path


def edited(path: pathlib.Path, folder: pathlib.Path, key: str, value: str) -> pathlib.Path:
    """A copy of the file with metadata entry `key` set to `value`."""
    proto = onnx.load(path)
    entry = next((p for p in proto.metadata_props if p.key == key), None) or proto.metadata_props.add(key=key)
    entry.value = value
    onnx.save(proto, folder / "edited.onnx")
    return folder / "edited.onnx"


def error_of(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("samples", ["99999999999", "20000"])
def test_too_many_samples_is_refused_before_allocating(explained, samples, capsys):
    """99999999999 samples of a [2, 8, 8] input would be 1e14 values (a MemoryError, exit 3, before)."""
    error = error_of(["verify", str(explained), "--samples", samples], capsys)
    assert error.startswith("lrpc: error: --samples") and "at most 10000" in error, error


def test_samples_whose_inputs_exceed_the_memory_budget_are_refused(tmp_path, capsys):
    """A 1×3×512×512 input is 786432 values a sample: 1 GiB holds 170 samples of them in float64."""
    from nets import make_model, tensor
    from onnx import helper
    import numpy as np

    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Flatten", ["y"], ["f"])],
        [tensor("x", ["batch", 3, 512, 512])],
        [tensor("f", ["batch", 512 * 512])],
        {"w": np.ones((1, 3, 1, 1), np.float32)},
    )
    path = tmp_path / "big.onnx"
    lrpc.compile(model, rule="epsilon", output=path)
    error = error_of(["verify", str(path), "--samples", "200"], capsys)
    assert "--samples 200" in error and "1 GiB" in error and "at most 170" in error, error


@pytest.mark.parametrize("value", ["nan", "inf", "-1e-3", "0"])
def test_a_tolerance_must_be_finite_and_positive(explained, value, capsys):
    with pytest.raises(SystemExit) as exit_:  # the CLI's argparse type names the option
        main(["verify", str(explained), f"--tolerance={value}"])
    assert exit_.value.code == 2 and "argument --tolerance: needs a finite number > 0" in capsys.readouterr().err
    with pytest.raises(lrpc.LrpcError, match="tolerance must be a finite number > 0"):
        lrpc.verify(explained, tolerance=float(value))
    with pytest.raises(lrpc.LrpcError, match="conservation_tolerance must be a finite number > 0"):
        lrpc.verify(explained, conservation_tolerance=float(value))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lrpc.relevance", '{"x": "relevance"} trailing'),
        ("lrpc.options", '{"rule": "epsilon"'),
        ("lrpc.preprocess", "scale=1/255"),
        ("lrpc.relevance_outputs", "[1, 2"),
    ],
)
def test_damaged_json_metadata_is_named(explained, tmp_path, key, value, capsys):
    path = edited(explained, tmp_path, key, value)
    error = error_of(["verify", str(path)], capsys)
    assert f"{path}: its {key} metadata is not valid JSON (" in error, error
    assert error.rstrip().endswith("the file was edited or damaged — recompile it"), error


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("lrpc.relevance", '["x"]', "a JSON object of input → relevance output names"),
        ("lrpc.relevance", '{"x": "no_such_output"}', "names output 'no_such_output', which the graph does not have"),
        ("lrpc.classes", "five", "not a whole number"),
        ("lrpc.target", "fixed:three", "not a target lrpc writes"),
    ],
)
def test_metadata_that_parses_but_is_not_lrpcs_is_named(explained, tmp_path, key, value, what, capsys):
    error = error_of(["verify", str(edited(explained, tmp_path, key, value))], capsys)
    assert f"its {key} metadata" in error and what in error and "recompile it" in error, error
