"""ConvTranspose for `lrpc verify`'s float64 run: onnx's reference evaluator is wrong for groups.

onnx 1.23's reference ConvTranspose writes each group's output into one channel, so a grouped
transposed convolution with more than one output channel per group (the adjoint of ResNeXt's,
RegNetY's and SE-ResNeXt's grouped 3×3 convs) fails with a broadcast error, and verify had to report
its float64 check as not run. With G groups, X = [X₁ … X_G] along channels and W = [W₁ … W_G] along
its first axis ([C_in, C_out/G, k…]),

    ConvTranspose(X, W, group=G) = concat_g ConvTranspose(X_g, W_g, group=1)  (+ B per output channel),

each part computed by onnx's own, correct, ungrouped implementation.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.ops.op_conv_transpose import ConvTranspose as ReferenceConvTranspose


class ConvTranspose(ReferenceConvTranspose):
    op_domain = ""

    def _run(self, X, W, B=None, group=None, **attributes):
        group = int(group or 1)
        if group == 1:
            return super()._run(X, W, B, group=1, **attributes)
        parts = [
            super(ConvTranspose, self)._run(x, w, None, group=1, **attributes)[0]
            for x, w in zip(np.split(X, group, axis=1), np.split(W, group, axis=0))
        ]
        y = np.concatenate(parts, axis=1)
        if B is not None:
            y = y + B.reshape(1, -1, *[1] * (y.ndim - 2))
        return (y.astype(X.dtype, copy=False),)
