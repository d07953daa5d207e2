"""MatMul by a constant followed by a constant Add becomes one affine layer (Gemm) with its bias.

    y = x @ W + b                       (x: [n, k], W: [k, m], b broadcastable to [m])
      → Gemm(x, W, b)
    y = x @ W + b  with x: [d₁, …, dₚ, k]
      → Reshape(Gemm(Reshape(x, [-1, k]), W, b), Shape(x)[:-1] ++ [m])

So the bias takes part in the layer's LRP rule (z = Wx + b) instead of being a separate Add.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import node_label
from .base import Canonization, fresh_name, replace_node
from .fold_constants import new_constant


def _affine_pair(node: ir.Node):
    """(matmul, x, W, b) when `node` is Add(MatMul(x, W), b) with W [k, m] and b of m elements."""
    if node.op_type != "Add":
        return None
    for mm_side in (0, 1):
        mm_out, bias = node.inputs[mm_side], node.inputs[1 - mm_side]
        matmul = mm_out.producer()
        if matmul is None or matmul.op_type != "MatMul" or bias.const_value is None:
            continue
        x, w = matmul.inputs
        if w.const_value is None or x.const_value is not None or len(mm_out.uses()) != 1:
            continue
        weight, b = w.const_value.numpy(), bias.const_value.numpy()
        if weight.ndim != 2 or b.size != weight.shape[1] or (b.ndim and b.shape[-1] != weight.shape[1]):
            continue
        if x.shape is None or len(x.shape) < 2 or node.outputs[0].shape is None:
            continue
        if len(node.outputs[0].shape) != len(x.shape):
            continue  # the bias broadcasts to a higher rank: not an affine layer's bias
        return matmul, x, w, b.reshape(-1)
    return None


class MatMulAddToGemmPass(Canonization):
    def rewrite(self, node, graph):
        pair = _affine_pair(node)
        if pair is None:
            return None
        matmul, x, w, bias = pair
        name = fresh_name(graph, matmul.name or node.name or "affine", matmul, node)
        b = new_constant(graph, f"{name}.bias", bias)
        tape = ir.tape.Tape()
        rank, (k, m) = len(x.shape), w.const_value.numpy().shape
        if rank == 2:
            y = tape.op("Gemm", [x, w, b], name=name)
        else:
            flat = tape.op(
                "Reshape", [x, new_constant(graph, f"{name}.flat_shape", np.array([-1, k]))], name=f"{name}/flatten"
            )
            z = tape.op("Gemm", [flat, w, b], name=name)
            int64 = lambda v: new_constant(graph, f"{name}.shape_part", np.array(v, dtype=np.int64))
            lead = tape.op("Slice", [tape.op("Shape", [x]), int64([0]), int64([-1])])
            shape = tape.op("Concat", [lead, int64([m])], attributes={"axis": 0})
            y = tape.op("Reshape", [z, shape], name=f"{name}/unflatten")
        replace_node(graph, node, tape.nodes, y)
        graph.remove(matmul, safe=True)
        return f"{node_label(matmul)} + {node_label(node)} → Gemm with bias"
