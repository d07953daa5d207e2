import pathlib
import sys

import pytest

# tests/compiler/nets.py and models/*.py are imported as plain modules by the tests.
ROOT = pathlib.Path(__file__).resolve().parent.parent
for folder in (ROOT / "tests" / "compiler", ROOT / "models"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture(scope="session")
def explained(tmp_path_factory) -> pathlib.Path:
    """The bundled digits CNN compiled as the demo does it (EpsilonPlus, preprocessing scale=1/255)."""
    import lrpc

    path = tmp_path_factory.mktemp("model") / "digits_explained.onnx"
    lrpc.compile(ROOT / "models" / "digits_cnn.onnx", composite="EpsilonPlus", preprocess="scale=1/255", output=path)
    return path
