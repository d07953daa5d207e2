import importlib.util
import os
import pathlib
import sys

import pytest

# Two pytest-xdist workers on two cores: torch's OpenMP threads busy-wait between parallel regions, and
# with both workers' pools spinning at once the LXT timm checks ran 233 s instead of 12 (4 tests, -n 2).
# Waiting threads sleep instead; set before any test module imports torch (workers inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# tests/compiler/nets.py and models/*.py are imported as plain modules by the tests.
ROOT = pathlib.Path(__file__).resolve().parent.parent
for folder in (ROOT / "tests" / "compiler", ROOT / "models"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
# tests/oracle is the package `oracle` (tests/ itself stays off sys.path: its folders keras/, fixtures/
# ... would import as namespace packages).
if "oracle" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("oracle", ROOT / "tests" / "oracle" / "__init__.py")
    sys.modules["oracle"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["oracle"])


@pytest.fixture(scope="session")
def explained(tmp_path_factory) -> pathlib.Path:
    """The bundled digits CNN compiled as the demo does it (EpsilonPlus, preprocessing scale=1/255)."""
    import lrpc

    path = tmp_path_factory.mktemp("model") / "digits_explained.onnx"
    lrpc.compile(ROOT / "models" / "digits_cnn.onnx", composite="EpsilonPlus", preprocess="scale=1/255", output=path)
    return path
