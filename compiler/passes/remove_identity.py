"""Remove Identity and inference-mode Dropout: `y = x` → uses of y read x.

A node whose output is also a graph output stays (renaming outputs would change the model's
interface); Identity and Dropout have a pass-through relevance rule for that case.
"""

from __future__ import annotations

import onnx_ir as ir

from ..errors import LrpcError, node_label


class RemoveIdentityPass(ir.passes.InPlacePass):
    """Identity/Dropout → their input."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, modified = model.graph, False
        for node in list(graph):
            if node.op_type not in ("Identity", "Dropout"):
                continue
            if node.op_type == "Dropout":
                _check_inference_dropout(node)
            out = node.outputs[0]
            if out.is_graph_output():
                continue
            out.replace_all_uses_with(node.inputs[0])
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)


def _check_inference_dropout(node: ir.Node) -> None:
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is not None and (training.const_value is None or bool(training.const_value.numpy())):
        raise LrpcError(f"Dropout {node_label(node)} runs in training mode; export the model in eval mode")
    if len(node.outputs) > 1 and node.outputs[1].uses():
        raise LrpcError(f"Dropout {node_label(node)}: its mask output is used; lrpc explains inference graphs")
