"""onnx.checker.check_model on the model, initializers stubbed out as typed inputs (as onnx_ir does for
the C API): unknown attributes, wrong attribute types, dangling inputs; and each initializer's stored
data against its dims and type (raw_data of prod(dims)·itemsize bytes; typed fields of prod(dims)
values, counted before anything is allocated), which the checker leaves to shape inference on small
tensors only and onnxruntime refuses at load. A model that is not valid ONNX is refused with an
LrpcError naming the problem, instead of surfacing later as an explained graph that fails the final
checker ("internal error") or as a file that does not run.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils

from ..errors import LrpcError, one_line, root_cause


def _check_stored_size(value: ir.Value) -> None:
    """raw_data must hold prod(dims)·itemsize bytes; typed fields (small tensors) must reshape to the dims."""
    tensor = value.const_value
    if not isinstance(tensor, ir.TensorProtoTensor):
        return
    proto = tensor.raw
    if proto.HasField("raw_data"):
        if len(proto.raw_data) != tensor.nbytes:
            raise LrpcError(
                f"the model is not valid ONNX: initializer '{value.name}' holds {len(proto.raw_data)} "
                f"bytes, but its dims {list(tensor.shape)} of {tensor.dtype.name} take {tensor.nbytes}"
            )
        return
    held = max(
        len(getattr(proto, f))
        for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")
    )
    if tensor.size > 2 * held:  # (complex values take two entries, 4-bit ones half of one)
        raise LrpcError(
            f"the model is not valid ONNX: initializer '{value.name}' holds {held} values, but its dims "
            f"{list(tensor.shape)} take {tensor.size}"
        )
    try:
        tensor.numpy()
    except (ValueError, TypeError) as e:
        raise LrpcError(
            f"the model is not valid ONNX: initializer '{value.name}' does not hold its dims "
            f"{list(tensor.shape)} of {tensor.dtype.name}: {one_line(e)}"
        ) from e


class CheckModelPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        try:
            _c_api_utils.call_onnx_api(onnx.checker.check_model, model)
        except Exception as e:  # onnx.checker.ValidationError, or a serialization error of a broken value
            cause = root_cause(e)
            kind = "" if cause is e else f"{type(cause).__name__}: "
            raise LrpcError(f"the model is not valid ONNX: {kind}{one_line(cause)}") from e
        for value in model.graph.initializers.values():
            _check_stored_size(value)
        return ir.passes.PassResult(model, False)
