"""onnx shape inference with strict_mode and type checks, its shapes merged into the model; onnx_ir's
own ShapeInferencePass logs a failure and goes on with the model unchanged, lrpc refuses the model."""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils
from onnx_ir.passes.common.shape_inference import _merge_func

from ..errors import LrpcError, one_line


class StrictShapeInferencePass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        infer = lambda proto: onnx.shape_inference.infer_shapes(
            proto, check_type=True, strict_mode=True, data_prop=True
        )
        try:
            inferred = _c_api_utils.call_onnx_api(infer, model)
        except Exception as e:  # onnx raises InferenceError / ValidationError subclasses
            raise LrpcError(f"ONNX shape inference failed on this model, which is not valid ONNX: {one_line(e)}") from e
        modified = _merge_func(model, inferred)
        for node in model.graph:  # onnx infers no shape for some function ops (GroupNormalization)
            y, x = node.outputs[0], node.inputs[0]
            if node.op_type in SAME_SHAPE and y.shape is None and x is not None and x.shape is not None:
                y.shape, modified = x.shape, True
        return ir.passes.PassResult(model, modified)


SAME_SHAPE = {"GroupNormalization", "LayerNormalization", "InstanceNormalization"}  # y has x's shape
