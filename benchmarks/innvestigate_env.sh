#!/usr/bin/env bash
# Create .venv-innvestigate: TensorFlow 2.14 + iNNvestigate 2.1.2 + tf2onnx, for benchmarks/innvestigate_ref.py only.
#
# Kept apart from .venv on purpose: iNNvestigate 2.1.2 needs tensorflow <2.15 and numpy <2, lrpc's
# environment has numpy 2 and onnx 1.23. The two sides talk through files (model.onnx + .npz), see
# benchmarks/fidelity.py. The venv holds a `.gitignore` of "*", so git never sees it.
#
# Pins, chosen so that no package upgrades numpy or protobuf behind TensorFlow's back:
#   innvestigate 2.1.2      Requires-Python <3.12, tensorflow >=2.6,<2.15, numpy >=1.22,<2
#   tensorflow 2.14.1       the newest TF iNNvestigate accepts (tf.keras = Keras 2.14); needs numpy <2,
#                           protobuf <5. Not tensorflow-cpu: iNNvestigate requires the name "tensorflow"
#                           and pip would install both; the Linux wheel pulls no CUDA packages by itself
#   numpy 1.26.4            the last 1.x; TF 2.14 and iNNvestigate both need <2
#   protobuf 3.20.3         tf2onnx 1.16.1 asks for protobuf ~=3.20, TF 2.14 allows >=3.20.3
#   tf2onnx 1.16.1          supports TF 2.14; converts tf.keras models (from_keras)
#   onnx 1.16.2             works with protobuf 3.20 and numpy 1.26 (opset 17 / IR 8 files as lrpc reads)
#   onnxruntime 1.19.2      checks the converted file against Keras' own forward; numpy 1.x wheels
#   matplotlib 3.8.4, future 0.18.3   iNNvestigate's own pins, given so pip resolves nothing newer
# Usage: bash benchmarks/innvestigate_env.sh   (PYTHON=... to pick the interpreter; 3.11 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null || python_bin=/root/.pyenv/versions/3.11.7/bin/python3
venv=.venv-innvestigate
if [ ! -x "$venv/bin/python" ]; then
  "$python_bin" -m venv "$venv"
  echo "*" > "$venv/.gitignore"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
"$venv/bin/python" -m pip install -q \
  "tensorflow==2.14.1" "numpy==1.26.4" "protobuf==3.20.3" "innvestigate==2.1.2" \
  "tf2onnx==1.16.1" "onnx==1.16.2" "onnxruntime==1.19.2" "matplotlib==3.8.4" "future==0.18.3"
# Smoke test: iNNvestigate analyzes a one-layer tf.keras model, tf2onnx converts it.
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" - <<'PY'
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
import innvestigate
import onnxruntime as ort
from importlib.metadata import version
import tf2onnx

inp = tf.keras.Input((4,), name="input")
model = tf.keras.Model(inp, tf.keras.layers.Dense(2, name="logits")(inp))
x = np.ones((3, 4), np.float32)
rel = innvestigate.create_analyzer("lrp.z", model).analyze(x)
assert rel.shape == (3, 4), rel.shape
print(f"ok: tensorflow {tf.__version__}, innvestigate {version('innvestigate')}, tf2onnx {tf2onnx.__version__}, "
      f"numpy {np.__version__}, onnxruntime {ort.__version__}")
PY
