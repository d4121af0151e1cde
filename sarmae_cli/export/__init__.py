"""ONNX export with embedded metadata and parity checks, and the onnxruntime backend."""
