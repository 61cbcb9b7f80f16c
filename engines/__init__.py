"""Inference engines for model bundles: ONNX export, ONNX Runtime and TensorRT runtimes."""
