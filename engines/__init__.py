"""Inference engines for model bundles: ONNX export, ONNX Runtime and TensorRT runtimes.

    from streamrec.engines import load_engine
    audio = load_engine(bundle_dir, "audio", backend="auto", precision="fp32")
    outputs = audio.infer({"logmel": logmel})   # {"scores": ..., "embedding": ...}

load_networks(bundle, backend) gives a bundle's three networks behind streamrec.core.networks' Networks
protocol (streamrec.engines.networks.EngineNetworks, or torch). TensorRT and CUDA are imported only
when a TensorRT engine is built or loaded.
"""

from streamrec.engines.base import BACKENDS, PRECISIONS, Engine, EngineError, TensorSpec
from streamrec.engines.loader import AUTO, BuiltEngine, EngineOptions, build_engines, choose_backend, load_engine
from streamrec.engines.networks import EngineNetworks, load_networks

__all__ = [
    "AUTO",
    "BACKENDS",
    "PRECISIONS",
    "BuiltEngine",
    "Engine",
    "EngineError",
    "EngineNetworks",
    "EngineOptions",
    "TensorSpec",
    "build_engines",
    "choose_backend",
    "load_engine",
    "load_networks",
]
