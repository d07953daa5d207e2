#!/usr/bin/env bash
# Set up on a fresh machine and run the tests; extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo test
# PyTorch for the torch.onnx export tests: 2.13.0 is the CPU build (any other version pulls CUDA).
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
# Zennit 0.5.1 for the reference tests: --no-deps, its torchvision import is stubbed (benchmarks/zennit_ref.py).
.venv/bin/python -m pip show -q zennit >/dev/null 2>&1 || .venv/bin/python -m pip install -q --no-deps zennit==0.5.1
# timm 1.0 and LXT 2.1 for tests/reference/test_lxt.py: --no-deps, torchvision stubbed (benchmarks/timm_env.sh says why).
.venv/bin/python -m pip show -q timm >/dev/null 2>&1 || .venv/bin/python -m pip install -q --no-deps "timm>=1.0,<1.1"
.venv/bin/python -m pip show -q lxt >/dev/null 2>&1 || .venv/bin/python -m pip install -q --no-deps lxt==2.1
# Hugging Face transformers for tests/reference/test_lxt_transformers.py (tiny configs, random weights; LXT
# 2.1 needs >= 4.51 and < 5): BERT, DistilBERT, RoBERTa, ViT, GPT-2, Llama, Qwen2 against LXT's patch maps.
.venv/bin/python -m pip show -q transformers >/dev/null 2>&1 || .venv/bin/python -m pip install -q "transformers==4.57.6"
# Triton's model_config.proto for the `lrpc export triton` test: --no-deps (tritonclient[grpc] pins protobuf < 7,
# which onnx here does not use); the test loads only the generated model_config_pb2 module.
.venv/bin/python -m pip show -q tritonclient >/dev/null 2>&1 || .venv/bin/python -m pip install -q --no-deps "tritonclient>=2.40"
# Ray Data for the `lrpc explain --ray` tests (tests/runtime/test_ray.py; they skip without it).
.venv/bin/python -m pip show -q ray >/dev/null 2>&1 || .venv/bin/python -m pip install -q "ray[data]==2.60.0"
# Lint and format check first (ruff, configured in pyproject.toml): a finding fails the run before any test starts.
.venv/bin/ruff check --quiet . || { echo "ruff check failed: see the findings above (.venv/bin/ruff check .)" >&2; exit 1; }
.venv/bin/ruff format --check --quiet . || { echo "ruff format: the files above are not formatted; run .venv/bin/ruff format ." >&2; exit 1; }
# Two pytest-xdist workers (the 2-core CI machine; -n 0 runs in one process): the quick lane
# (-m "not slow") takes ~4.5 + 1.5 min instead of ~6.5 + 3. The signals sent at random points
# (tests/fuzz/test_signals.py) judge timing windows, so they run alone, after, without a second worker's load.
.venv/bin/python -m pytest -n 2 --dist loadgroup --ignore=tests/fuzz/test_signals.py "$@"
.venv/bin/python -m pytest tests/fuzz/test_signals.py "$@"
# The Keras front end and the SavedModel emitter need TensorFlow, which lives in its own environment
# (.venv-keras; in .venv those tests skip). Extra arguments go to both runs: give options, not paths.
log=$(mktemp)
bash scripts/keras_env.sh >"$log" 2>&1 || { tail -n 30 "$log"; echo "scripts/keras_env.sh failed" >&2; exit 1; }
rm -f "$log"
.venv-keras/bin/python -m pytest -n 2 tests/keras "$@"
