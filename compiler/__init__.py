"""lrpc: compile LRP explanations into plain ONNX graphs."""
__version__ = "0.1.0"
