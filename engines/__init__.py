"""Inference engines for model bundles: ONNX export, ONNX Runtime and TensorRT runtimes.

    from engines import load_engine
    audio = load_engine(bundle_dir, "audio", backend="auto", precision="fp32")
    outputs = audio.infer({"logmel": logmel})   # {"scores": ..., "embedding": ...}

engines.networks.EngineNetworks puts a bundle's three engines behind streamrec.recognizer's Networks
protocol. TensorRT and CUDA are imported only when a TensorRT engine is built or loaded.
"""

from .base import BACKENDS, PRECISIONS, Engine, EngineError, TensorSpec
from .loader import AUTO, BuiltEngine, EngineOptions, build_engines, choose_backend, load_engine

__all__ = [
    "AUTO",
    "BACKENDS",
    "PRECISIONS",
    "BuiltEngine",
    "Engine",
    "EngineError",
    "EngineOptions",
    "TensorSpec",
    "build_engines",
    "choose_backend",
    "load_engine",
]
