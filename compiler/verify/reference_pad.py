"""Pad for `lrpc verify`'s float64 run: onnx's reference evaluator refuses negative pads.

ONNX Pad takes pads [b₁ … b_r, e₁ … e_r] (over `axes` when given, opset 18); a negative pad removes
that many elements (a crop: Keras' Cropping2D, torch's F.pad(x, (-1, -1))), a positive one adds them
by `mode` (constant, reflect, edge, wrap). Crop first, then pad: the result along an axis of size D is
D + b + e either way.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

NUMPY_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def pad(x: np.ndarray, pads, mode: str = "constant", value=0.0, axes=None) -> np.ndarray:
    rank = x.ndim
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    n = len(axes)
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = int(pads[i]), int(pads[n + i])
    crop = tuple(slice(max(-b, 0), x.shape[a] - max(-e, 0)) for a, (b, e) in enumerate(zip(begin, end)))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=value)
    return np.pad(x, widths, mode=NUMPY_MODES[mode])


class Pad(OpRun):
    op_domain = ""

    def _run(self, data, pads, constant_value=None, axes=None, mode=None):
        mode = mode or getattr(self, "mode", "constant") or "constant"
        if isinstance(mode, bytes):
            mode = mode.decode()
        value = 0 if constant_value is None else np.asarray(constant_value).reshape(-1)[0]
        return (pad(data, np.asarray(pads).reshape(-1), mode, value, None if axes is None else np.asarray(axes)),)
