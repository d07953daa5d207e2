"""The file as deployed: onnxruntime's CPU build in float32, with the explained tensor as an extra output
(the conservation check needs its values, S₀ = Σ_u w_u·y_u)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import LrpcError


def run_float32(proto: onnx.ModelProto, feeds: dict, extra: str) -> dict[str, np.ndarray]:
    """onnxruntime on the file as it is, plus the explained tensor `extra` as an extra output."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    if extra not in {o.name for o in probe.graph.output}:
        elem = next(
            (v.type.tensor_type.elem_type for v in probe.graph.value_info if v.name == extra), onnx.TensorProto.FLOAT
        )
        probe.graph.output.append(onnx.helper.make_tensor_value_info(extra, elem, None))
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds)))
    except Exception as e:  # onnxruntime's own errors: a broken graph, wrong inputs
        raise LrpcError(f"onnxruntime cannot run the file: {str(e).splitlines()[0][:300]}") from None
