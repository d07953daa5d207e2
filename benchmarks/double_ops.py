"""An explained ONNX graph in float64 for the LXT comparison: lrpc's own double conversion
(`lrpc.verify.float64.as_double`) run by onnx's reference evaluator, with Conv and ConvTranspose computed by
torch in float64.

Why not `lrpc.verify.float64.run_double` as it is: onnx 1.23's reference ConvTranspose is wrong for groups
with more than one output channel each (op_conv_transpose.py writes each group's output into one
channel: ResNeXt's grouped 3×3 convs fail with "could not broadcast input array from shape (32,4,4)
into shape (1,4,4)"), and its Conv is a numpy loop, minutes on the larger nets. torch's
conv2d / conv_transpose2d in float64 are exact to rounding and cover every group.

ONNX ConvTranspose, per spatial axis (no auto_pad, no output_shape — what lrpc emits):
    full = stride·(in − 1) + (k − 1)·dilation + 1,   y = full[p_begin : full − p_end + output_padding]
(positions past `full` get only the bias).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from onnx.reference.op_run import OpRun


def _t(a: np.ndarray) -> torch.Tensor:
    # a fresh C-order copy: the evaluator's arrays may be read-only or flipped (negative strides, even on
    # an axis of size 1, which numpy still calls contiguous)
    return torch.from_numpy(np.array(a, order="C", copy=True))


def _pads(pads, rank):
    pads = list(pads or [0] * (2 * rank))
    return pads[:rank], pads[rank:]


class Conv(OpRun):
    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, pads=None, strides=None):
        rank = X.ndim - 2
        if rank not in (1, 2) or auto_pad not in (None, "NOTSET", b"NOTSET"):
            raise NotImplementedError(f"Conv of rank {rank}, auto_pad {auto_pad}")
        begin, end = _pads(pads, rank)
        x = F.pad(_t(X), [p for b, e in zip(begin[::-1], end[::-1]) for p in (b, e)])
        conv = F.conv1d if rank == 1 else F.conv2d
        y = conv(
            x, _t(W), None if B is None else _t(B), stride=strides or 1, dilation=dilations or 1, groups=group or 1
        )
        return (y.numpy(),)


class ConvTranspose(OpRun):
    def _run(
        self,
        X,
        W,
        B=None,
        auto_pad=None,
        dilations=None,
        group=None,
        kernel_shape=None,
        output_padding=None,
        output_shape=None,
        pads=None,
        strides=None,
    ):
        rank = X.ndim - 2
        if rank not in (1, 2) or output_shape or auto_pad not in (None, "NOTSET", b"NOTSET"):
            raise NotImplementedError(f"ConvTranspose of rank {rank}, auto_pad {auto_pad}, output_shape {output_shape}")
        conv = F.conv_transpose1d if rank == 1 else F.conv_transpose2d
        full = conv(_t(X), _t(W), None, stride=strides or 1, dilation=dilations or 1, groups=group or 1).numpy()
        begin, end = _pads(pads, rank)
        extra = list(output_padding or [0] * rank)
        index = tuple(slice(b, n - e + p) for b, e, p, n in zip(begin, end, extra, full.shape[2:]))
        full = np.pad(full, [(0, 0), (0, 0)] + [(0, p) for p in extra])
        y = full[(slice(None), slice(None), *index)]
        if B is not None:
            y = y + B.reshape(1, -1, *[1] * rank)
        return (np.ascontiguousarray(y),)


def run_double(model, feeds: dict, names: list[str]) -> dict:
    """`model` (an ONNX ModelProto) in float64 on `feeds`: the tensors `names`."""
    from onnx.reference import ReferenceEvaluator

    from lrpc.verify.float64 import as_double
    from lrpc.verify.reference_maxpool import MaxPool, MaxUnpool
    from lrpc.verify.reference_pad import Pad

    evaluator = ReferenceEvaluator(as_double(model), new_ops=[MaxPool, MaxUnpool, Pad, Conv, ConvTranspose])
    feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    return dict(zip(names, evaluator.run(names, feeds)))
