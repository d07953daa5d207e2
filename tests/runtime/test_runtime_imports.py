"""The runtime package must stay light: numpy + onnxruntime only (Pillow lazily)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ["onnx", "onnx_ir", "onnxscript", "tensorflow", "torch", "lrpc", "PIL"]


def test_import_pulls_no_heavy_modules():
    code = (
        "import json, sys\n"
        "import lrpc_runtime\n"
        "from lrpc_runtime import Explainer, Explanation, DeviceUnavailableError\n"
        "from lrpc_runtime import heatmap, save_heatmap\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(json.dumps(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
