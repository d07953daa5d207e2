"""MatMul by a constant followed by a constant Add becomes one affine layer (Gemm) with its bias.

    y = x @ W + b                       (x: [n, k], W: [k, m], b broadcastable to [m])
      → Gemm(x, W, b)
    y = x @ W + b  with x: [d₁, …, dₚ, k]
      → Reshape(Gemm(Reshape(x, [-1, k]), W, b), Shape(x)[:-1] ++ [m])

So the bias takes part in the layer's LRP rule (z = Wx + b) instead of being a separate Add.

When the explained graph is emitted, `unflattened_forward` gives such a layer's forward back its
original form, Add(MatMul(x, W), b) on x's own rank (the rule's nodes read the flat z as a free
Reshape of it): inside an explained graph onnxruntime ran the flat Gemm with a bias 1.7× as long as
the MatMul and Add (ViT-Tiny's fc1 at batch 8: 2.6 ms against 1.0 + 0.5; PROFILE.md §13).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..errors import node_label
from .base import Canonization, const_array, fresh_name, replace_node
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


def unflattened_forward(graph: ir.Graph, added: set) -> int:
    """Rewrite each forward Reshape(x, [-1, k]) → Gemm(·, W, b) → Reshape that MatMulAddToGemmPass made
    into Add(MatMul(x, W), b) → the same final Reshape; nodes in `added` (the rule's) that read the flat z
    read Reshape(Add(…), [-1, m]) instead. Returns how many layers."""
    count = 0
    for gemm in [n for n in graph if n.op_type == "Gemm" and n not in added]:
        flat = gemm.inputs[0].producer() if gemm.inputs else None
        if len(gemm.inputs) != 3 or gemm.inputs[2] is None or gemm.attributes:
            continue
        if flat is None or flat.op_type != "Reshape" or flat in added:
            continue
        x, w, z = flat.inputs[0], gemm.inputs[1], gemm.outputs[0]
        unflatten = [n for n, _ in z.uses() if n.op_type == "Reshape" and n not in added]
        weight, flat_shape = const_array(w), const_array(flat.inputs[1])
        if weight is None or flat_shape is None or flat_shape.tolist() != [-1, weight.shape[0]]:
            continue
        if len(unflatten) != 1 or z.is_graph_output() or x.shape is None or len(x.shape) < 3:
            continue
        tape = ir.tape.Tape()
        product = tape.op("MatMul", [x, w], name=f"{gemm.name}/matmul")
        y = tape.op("Add", [product, gemm.inputs[2]], name=f"{gemm.name}/bias")
        unflatten[0].replace_input_with(0, y)
        if z.uses():
            rows = new_constant(graph, f"{gemm.name}.flat_out", np.array([-1, weight.shape[1]], dtype=np.int64))
            flat_z = tape.op("Reshape", [y, rows], name=f"{gemm.name}/flat_out")
            ir.convenience.replace_all_uses_with(z, flat_z)
        graph.insert_before(gemm, tape.nodes)
        graph.remove(gemm, safe=True)
        if not flat.outputs[0].uses() and not flat.outputs[0].is_graph_output():
            shape = flat.inputs[1]
            graph.remove(flat, safe=True)
            if shape is not None and not shape.uses() and graph.initializers.get(shape.name) is shape:
                del graph.initializers[shape.name]
        count += 1
    return count
