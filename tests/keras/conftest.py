"""Tests that need TensorFlow: run in .venv-keras (scripts/keras_env.sh) by scripts/test.sh.

In the project's own environment, which never has TensorFlow, every test here is skipped.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # plain kernels: stable float round-off

pytest.importorskip("tensorflow", reason="TensorFlow lives in .venv-keras (scripts/keras_env.sh)")
