#!/usr/bin/env bash
# Create .venv-keras: TensorFlow (CPU) + Keras 3 + tf2onnx, for models/keras_fixtures.py only.
#
# Kept apart from .venv on purpose: TensorFlow pins protobuf, numpy and h5py ranges of its own and
# must never be installed into the project's environment. The fixtures it writes (tests/fixtures/keras)
# are checked in and tested from .venv with onnxruntime alone.
#
# Pins, tried together on Python 3.11 (CPU, no network beyond the package index):
#   tensorflow-cpu 2.21.0   needs protobuf >=6.31.1,<8, numpy >=1.26, h5py <3.15, ml_dtypes <1
#   keras 3.15.1            the newest Keras 3 (TF 2.21 asks for >=3.12)
#   tf2onnx 1.17.0          asks only onnx >=1.14, protobuf >=3.20
#   onnx 1.23.2, onnxruntime 1.31.1, numpy 2.4.6: the versions in .venv, so the fixtures are written
#                           by the same onnx that reads them in the tests
#   protobuf 6.33.6         the 6.x line TF 2.21 was built and tested against (7.x is allowed by its
#                           metadata but newer than TF itself); onnx 1.23 accepts it
# lrpc itself is installed editable with --no-deps (its own dependencies are pinned here), so the Keras
# front end and the SavedModel emitter are tested in this environment: tests/keras (run by scripts/test.sh).
# Usage: bash scripts/keras_env.sh   (then: .venv-keras/bin/python models/keras_fixtures.py)
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3.11}
if [ ! -x .venv-keras/bin/python ]; then
  "$python_bin" -m venv .venv-keras
  .venv-keras/bin/python -m pip install -q --upgrade pip
fi
.venv-keras/bin/python -m pip install -q \
  "tensorflow-cpu==2.21.0" "keras==3.15.1" "tf2onnx==1.17.0" \
  "onnx==1.23.2" "onnxruntime==1.31.1" "protobuf==6.33.6" "numpy==2.4.6" "h5py==3.14.0" \
  "onnx-ir==1.1.0" "pillow>=10" "pytest>=8" "pytest-xdist==3.8.0"
.venv-keras/bin/python -m pip install -q --no-deps -e .
# Smoke test: both import, and a one-layer model converts and runs.
TF_CPP_MIN_LOG_LEVEL=2 .venv-keras/bin/python - <<'EOF'
import numpy as np
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
import keras

inp = keras.Input((4,), name="x")
model = keras.Model(inp, keras.layers.Dense(2)(inp))
spec = (tf.TensorSpec((None, 4), tf.float32, name="x"),)
proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
x = np.ones((3, 4), np.float32)
sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
got = sess.run(None, {"x": x})[0]
np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)
print(f"ok: tensorflow {tf.__version__}, keras {keras.__version__}, tf2onnx {tf2onnx.__version__}")
EOF
