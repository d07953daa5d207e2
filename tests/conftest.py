import pathlib
import sys

# tests/compiler/nets.py and models/*.py are imported as plain modules by the tests.
ROOT = pathlib.Path(__file__).resolve().parent.parent
for folder in (ROOT / "tests" / "compiler", ROOT / "models"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
