"""lrpc_runtime: run explained ONNX graphs with onnxruntime."""
