"""lrpc: compile Layer-wise Relevance Propagation into plain ONNX graphs.

    import lrpc
    lrpc.compile("model.onnx", rule="alpha1beta0", output="explained.onnx")
    report = lrpc.verify("explained.onnx", source="model.onnx")
    print(report.text()); assert report.passed

Running the explained file on data is lrpc_runtime's job (Explainer, explain_files, heatmap).
"""

__version__ = "0.1.0"

from .startup import quiet_start  # noqa: E402

quiet_start()  # the lrpc program: a signal during the imports below ends it with one line

from .api import compile  # noqa: E402
from .errors import LrpcError  # noqa: E402
from .verify import VerifyReport, verify  # noqa: E402

__all__ = ["compile", "verify", "VerifyReport", "LrpcError", "__version__"]
