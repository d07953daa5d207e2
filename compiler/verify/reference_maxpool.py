"""MaxPool and MaxUnpool for `lrpc verify`'s float64 run: onnx's reference evaluator gets MaxPool's
Indices output wrong and ignores MaxUnpool's output_shape.

With padding, onnx 1.23's reference MaxPool returns indices without the batch and channel offsets (a
3×3/1 pool with pads 1 on [1, 8, 4, 4] gave indices 0…14 where onnxruntime and the ONNX spec give
flat positions 0…127), so the relevance an explained graph routes to the winners landed in the wrong
channel. This one follows the spec: over each window (padding counts as −∞), the first maximum in
row-major window order, as onnxruntime picks it, and

    index = flat position in x = ((n·C + c)·D₁ + i₁)·D₂ + i₂ …   (storage_order 0)

Output size per spatial axis: ⌊(D + p_begin + p_end − ((k − 1)·d + 1)) / s⌋ + 1, or ⌈·⌉ + 1 with
ceil_mode, dropping a last window that would start in the end padding.

MaxUnpool(X, I, output_shape) puts each X value at its flat position I in a zero tensor of
output_shape — which lrpc gives whenever (D − 1)·s + k − pads ≠ the pooled input's size (a 1×1/2 pool
on an even map, ResNet50V2's shortcut); onnx 1.23's reference builds the default shape regardless.
"""

from __future__ import annotations

import itertools

import numpy as np
from onnx.reference.op_run import OpRun

from ..geometry import same_pads


def _pads(auto_pad: str, dims, kernel, strides, dilations, pads) -> tuple[list[int], list[int]]:
    rank = len(dims)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return same_pads(auto_pad, dims, kernel, strides, dilations)
    if auto_pad == "VALID" or not pads:
        return [0] * rank, [0] * rank
    return list(pads[:rank]), list(pads[rank:])


def _out_size(d: int, k: int, s: int, dl: int, pb: int, pe: int, ceil_mode: bool) -> int:
    span = d + pb + pe - ((k - 1) * dl + 1)
    out = (-(-span // s) if ceil_mode else span // s) + 1
    return out - 1 if ceil_mode and (out - 1) * s >= d + pb else out


def max_pool(x: np.ndarray, kernel, strides=None, pads=None, dilations=None, auto_pad="NOTSET", ceil_mode=0):
    """(y, indices) of an N-D MaxPool over x [N, C, D₁, …]."""
    n, c, *dims = x.shape
    rank = len(dims)
    strides, dilations = list(strides or [1] * rank), list(dilations or [1] * rank)
    begin, end = _pads(auto_pad, dims, kernel, strides, dilations, pads)
    out = [
        _out_size(d, k, s, dl, pb, pe, bool(ceil_mode))
        for d, k, s, dl, pb, pe in zip(dims, kernel, strides, dilations, begin, end)
    ]
    reach = [(o - 1) * s + (k - 1) * dl + 1 for o, s, k, dl in zip(out, strides, kernel, dilations)]
    padded = np.full((n, c, *[max(r, pb + d) for r, pb, d in zip(reach, begin, dims)]), -np.inf, x.dtype)
    padded[(slice(None), slice(None), *[slice(pb, pb + d) for pb, d in zip(begin, dims)])] = x
    best = np.full((n, c, *out), -np.inf, x.dtype)
    where = [np.zeros((n, c, *out), np.int64) for _ in range(rank)]
    for offset in itertools.product(*[range(k) for k in kernel]):
        starts = [o * dl for o, dl in zip(offset, dilations)]
        window = padded[
            (slice(None), slice(None), *[slice(st, st + (o - 1) * s + 1, s) for st, o, s in zip(starts, out, strides)])
        ]
        better = window > best  # strict: the first maximum in window order wins
        best = np.where(better, window, best)
        for axis in range(rank):
            position = (np.arange(out[axis]) * strides[axis] + starts[axis] - begin[axis]).reshape(
                [-1 if a == axis else 1 for a in range(rank)]
            )
            where[axis] = np.where(better, position, where[axis])
    flat = np.arange(n * c, dtype=np.int64).reshape(n, c, *[1] * rank)
    for axis in range(rank):
        flat = flat * dims[axis] + where[axis]
    return best, flat


class MaxPool(OpRun):
    """onnx.reference op override (ReferenceEvaluator(..., new_ops=[MaxPool]))."""

    op_domain = ""

    def _run(
        self,
        x,
        auto_pad=None,
        ceil_mode=None,
        dilations=None,
        kernel_shape=None,
        pads=None,
        storage_order=None,
        strides=None,
    ):
        if storage_order:
            raise NotImplementedError("MaxPool with storage_order=1")
        y, indices = max_pool(x, kernel_shape, strides, pads, dilations, auto_pad or "NOTSET", ceil_mode or 0)
        return (y, indices) if len(self.output) > 1 else (y,)


class MaxUnpool(OpRun):
    """onnx.reference op override: zeros of output_shape (else the default (D − 1)·s + k − pads), X at I."""

    op_domain = ""

    def _run(self, x, indices, output_shape=None, kernel_shape=None, pads=None, strides=None):
        if output_shape is None:
            rank = len(kernel_shape)
            pads, strides = list(pads or [0] * 2 * rank), list(strides or [1] * rank)
            output_shape = [
                *x.shape[:2],
                *[
                    (d - 1) * s + k - pb - pe
                    for d, s, k, pb, pe in zip(x.shape[2:], strides, kernel_shape, pads[:rank], pads[rank:])
                ],
            ]
        y = np.zeros(int(np.prod(output_shape)), x.dtype)
        y[indices.reshape(-1)] = x.reshape(-1)
        return (y.reshape([int(d) for d in output_shape]),)
