"""pyproject lists every package: a non-editable install (`pip install .`) ships only the listed ones, so a
new sub-package missing there imports in the checkout and fails for a user."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for name, folder in config["package-dir"].items():
        found = {
            ".".join([name, *p.parent.relative_to(ROOT / folder).parts])
            for p in (ROOT / folder).rglob("__init__.py")
            if "__pycache__" not in p.parts
        }
        assert found <= listed, f"pyproject.toml [tool.setuptools] packages lacks {sorted(found - listed)}"
