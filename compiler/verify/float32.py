"""The file as deployed: onnxruntime's CPU build in float32, with the explained tensor as an extra output
(the conservation check needs its values, S₀ = Σ_u w_u·y_u)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import LrpcError


def run_float32(proto: onnx.ModelProto, feeds: dict, extra: str, quantized=()) -> dict[str, np.ndarray]:
    """onnxruntime on the file as it is, plus the explained tensor `extra` and the `quantized` integers (a QDQ
    file's activation quantizers: verify/quantized.py) as extra outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    for name in (extra, *quantized):
        if name not in {o.name for o in probe.graph.output}:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, _elem_type(probe, name), None))
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds)))
    except Exception as e:  # onnxruntime's own errors: a broken graph, wrong inputs
        raise LrpcError(f"onnxruntime cannot run the file: {str(e).splitlines()[0][:300]}") from None


def _elem_type(proto: onnx.ModelProto, name: str) -> int:
    """`name`'s element type: its value_info's, a QuantizeLinear output's zero point's (uint8 without one),
    else float."""
    declared = next((v.type.tensor_type.elem_type for v in proto.graph.value_info if v.name == name), None)
    if declared:
        return declared
    producer = next((n for n in proto.graph.node if name in n.output), None)
    if producer is not None and producer.op_type == "QuantizeLinear":
        zero_point = producer.input[2] if len(producer.input) > 2 else ""
        return next((t.data_type for t in proto.graph.initializer if t.name == zero_point), onnx.TensorProto.UINT8)
    return onnx.TensorProto.FLOAT
