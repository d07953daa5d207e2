#!/usr/bin/env bash
# Add timm 1.0 and LXT 2.1 to .venv, for benchmarks/modern_zoo.py, benchmarks/lxt_ref.py and
# tests/reference/test_lxt.py (they skip without them).
#
# Both with --no-deps, because each would otherwise pull torchvision (and with it a CUDA torch build):
#   timm 1.0.31   Requires-Dist torch, torchvision, pyyaml, huggingface_hub, safetensors. With
#                 pretrained=False `import timm; timm.create_model(...)` needs none of the last three
#                 (timm guards their imports: they serve hub downloads, safetensors checkpoints and
#                 the webdataset reader), and torchvision is stubbed (benchmarks/torchvision_stub.py:
#                 timm imports ops.misc.FrozenBatchNorm2d, datasets, transforms at import time).
#   lxt 2.1       Requires-Dist transformers, accelerate, bitsandbytes, open_clip_torch, zennit, ...
#                 The harness uses only lxt.efficient.rules and lxt.efficient.patches (plain torch),
#                 loaded without lxt's package __init__, which imports transformers' model modules.
# Usage: bash benchmarks/timm_env.sh   (idempotent; scripts/test.sh runs the same two lines)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || { echo "no .venv: run scripts/setup.sh first" >&2; exit 1; }
"$py" -m pip show -q timm >/dev/null 2>&1 || "$py" -m pip install -q --no-deps "timm>=1.0,<1.1"
"$py" -m pip show -q lxt >/dev/null 2>&1 || "$py" -m pip install -q --no-deps "lxt==2.1"
"$py" - <<'PY'
import sys
sys.path.insert(0, "benchmarks")
from torchvision_stub import stub_torchvision
stub_torchvision()
import timm
model = timm.create_model("efficientnet_b0", pretrained=False)
import lxt_ref
rules, patches = lxt_ref.import_lxt()
print(f"timm {timm.__version__} (efficientnet_b0 built), lxt rules {', '.join(n for n in dir(rules) if n.endswith(('rule_implicit', 'gradient')))}")
PY
