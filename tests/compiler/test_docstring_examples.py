"""The `Example::` blocks in lrpc's and lrpc_runtime's docstrings run as doctests: an example that no
longer holds fails here. Modules that need TensorFlow (the Keras front end, the SavedModel emitter) are
left to .venv-keras, where they import."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lrpc
import lrpc_runtime

NEEDS_TENSORFLOW = ("lrpc.savedmodel", "lrpc.frontend.keras", "lrpc.frontend.tf2onnx_patches")


def _modules() -> list[str]:
    names = []
    for package in (lrpc, lrpc_runtime):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(NEEDS_TENSORFLOW):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail (run above)"


def test_the_examples_are_found():
    finder = doctest.DocTestFinder()
    count = sum(len(t.examples) for name in _modules() for t in finder.find(importlib.import_module(name)))
    assert count >= 50, f"only {count} docstring examples found: is the finder reading the modules?"
