"""Topological order (onnx_ir's sort); a graph with a cycle is refused, naming it as such."""

from __future__ import annotations

import onnx_ir as ir

from ..errors import LrpcError, one_line


class SortPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        try:
            model.graph.sort()
        except ValueError as e:  # onnx_ir: "Graph contains a cycle, topological sort is not possible."
            raise LrpcError(
                f"the model's graph is not valid ONNX: {one_line(e)} (a node reads its own output through other nodes)"
            ) from e
        return ir.passes.PassResult(model, False)
