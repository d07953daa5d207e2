"""lrpc: compile Layer-wise Relevance Propagation into plain ONNX graphs.

    import lrpc
    lrpc.compile("model.onnx", rule="alpha1beta0", output="explained.onnx")
"""

__version__ = "0.1.0"

from .api import compile  # noqa: E402
from .errors import LrpcError  # noqa: E402

__all__ = ["compile", "LrpcError", "__version__"]
