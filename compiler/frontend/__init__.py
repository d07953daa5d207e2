"""Frontends: a model source → onnx_ir.

ONNX (a path, bytes, a ModelProto or an ir.Model) is read by `onnx.py`. A Keras file (`.keras`, `.h5`)
or a SavedModel folder is converted to ONNX by `keras.py` (TensorFlow needed: `pip install "lrpc[keras]"`)
and then read the same way.
"""

from __future__ import annotations

import onnx_ir as ir

from . import keras as keras_frontend
from . import onnx as onnx_frontend


def load(source) -> ir.Model:
    """The model `source` names, as onnx_ir, whatever its format."""
    if keras_frontend.is_keras_source(source):
        return onnx_frontend.load(keras_frontend.load(source))
    return onnx_frontend.load(source)
