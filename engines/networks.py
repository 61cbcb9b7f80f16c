"""A bundle's engines behind streamrec.core.networks' `Networks` protocol (numpy in, probabilities out),
so the live runtime and evaluation run on ONNX Runtime or TensorRT exactly as on torch.

The audio front end (log-mel) runs in torch before the audio engine, FP32 always: streamrec.engines.export says why;
so does the tagger's own front end before the tagger engine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from streamrec.core.bundle import KINDS, Bundle
from streamrec.core.features import LogMel, LogMelConfig, frames_to_tensor, writable_array
from streamrec.core.models.tagger import MusicnnFrontend
from streamrec.core.networks import NetworkInfo, Networks, TorchNetworks
from streamrec.core.scores import softmax
from streamrec.engines.base import TRITON, Engine, EngineError, ReportsStatus, StatusListener
from streamrec.engines.loader import AUTO, EngineOptions, choose_backend, load_engine

log = logging.getLogger(__name__)


class EngineNetworks:
    """audio(windows), frames(images), fuse(audio, frames, present), tagger(windows) of a bundle on one backend and
    precision."""

    def __init__(
        self,
        bundle: Bundle | str | Path | None,
        backend: str = "auto",
        precision: str = "fp32",
        options: EngineOptions | None = None,
        engines: Mapping[str, Engine] | None = None,
    ) -> None:
        """engines: made elsewhere (the triton backend's TritonEngines), each taking any batch; default: loaded
        for `backend` and `precision` through the bundle's engine cache."""
        loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.info = NetworkInfo.from_bundle(loaded)
        if engines is not None:
            self.backend, self._chunk, self._engines = backend, None, dict(engines)
        else:
            self.backend = choose_backend(backend)
            options = options or EngineOptions()
            # TensorRT engines take batches up to their profile's maximum; the others take any batch.
            self._chunk = options.max_batch if self.backend == "tensorrt" else None
            # The tagger runs on one thread, the caller's: the runtime's tagger thread, whose low CPU priority then
            # covers its work (an intra-op pool's threads would run at normal priority).
            one_thread = replace(options, threads=1)
            self._engines = {
                kind: load_engine(loaded, kind, self.backend, precision, one_thread if kind == "tagger" else options)
                for kind in KINDS
                if loaded.has(kind)
            }
        self._logmel: LogMel | None = None
        if "audio" in self._engines:
            meta = self._engines["audio"].metadata
            self._logmel = LogMel(LogMelConfig(**meta["frontend"])).eval()
            self._audio_probabilities = bool(meta["scores_are_probabilities"])
        self._tagger_frontend = MusicnnFrontend().eval()

    def _run(self, kind: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        engine = self._engines.get(kind)
        if engine is None:
            raise RuntimeError(f"this bundle has no {kind} network")
        count = len(next(iter(inputs.values())))
        step = self._chunk or max(count, 1)
        parts = [engine.infer({k: v[i : i + step] for k, v in inputs.items()}) for i in range(0, count, step)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def audio(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, samples) float32 -> probabilities (n, outputs), embeddings (n, audio_dim). Windows shorter than
        the network's are zero-padded at the end (the graph's time axis is fixed)."""
        return self.audio_features(self.frontend(windows))

    def frontend(self, windows: np.ndarray) -> np.ndarray:
        """The log-mel front end, in torch: (n, samples) float32 -> (n, n_mels, frames)."""
        if self._logmel is None:
            raise RuntimeError("this bundle has no audio network")
        window = self.info.window_samples
        if windows.shape[1] != window:
            padded = np.zeros((len(windows), window), np.float32)
            padded[:, : min(window, windows.shape[1])] = windows[:, :window]
            windows = padded
        with torch.inference_mode():
            return self._logmel(torch.from_numpy(writable_array(windows, np.float32))).numpy()

    def audio_features(self, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The audio engine alone: log-mel (n, n_mels, frames) -> probabilities, embeddings."""
        out = self._run("audio", {"logmel": logmel})
        scores = out["scores"] if self._audio_probabilities else softmax(out["scores"])
        return scores, out["embedding"]

    def frames(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, size, size, 3) uint8 RGB -> probabilities (n, classes), embeddings (n, video_dim)."""
        out = self._run("video", {"images": frames_to_tensor(images).numpy()})
        return softmax(out["logits"]), out["embedding"]

    def fuse(self, audio: np.ndarray, frames: np.ndarray, present: np.ndarray) -> np.ndarray:
        """(n, audio_dim), (n, k, video_dim), (n, 2) presence mask -> probabilities (n, classes)."""
        out = self._run("fusion", {"audio": audio, "frames": frames, "present": present})
        return softmax(out["logits"])

    def tagger(self, windows: np.ndarray) -> np.ndarray:
        """(n, window_samples) float32 -> the tagger's probabilities (n, classes); its front end runs in torch."""
        with torch.inference_mode():
            mel = self._tagger_frontend(torch.from_numpy(writable_array(windows, np.float32))).numpy()
        return softmax(self._run("tagger", {"mel": mel})["logits"])

    def set_status_listener(self, listener: StatusListener | None) -> None:
        """Engines on a server (the triton backend) report it going away and coming back; others never do."""
        for engine in self._engines.values():
            if isinstance(engine, ReportsStatus):
                engine.set_status_listener(listener)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


def load_networks(
    bundle_path: str | Path | None = None,
    backend: str = AUTO,
    threads: int | None = None,
    precision: str = "fp32",
    *,
    triton_url: str | None = None,
) -> Networks:
    """The networks of a bundle (default: the bundled model) on one inference backend and precision.

    "auto" picks TensorRT with a CUDA GPU, else ONNX Runtime, else torch (streamrec.engines.loader says why);
    engines are exported and cached beside the bundle on first use. threads: ONNX Runtime intra-op
    threads per network (None: one per core, up to 4). An INT8 engine not qualified for this CPU is
    refused (EngineError, one line).
    """
    bundle = Bundle.load(bundle_path)
    if backend == TRITON:  # served by a Triton server at triton_url (grpc://HOST:PORT), not run here
        from streamrec.engines.triton_client import triton_engines  # imported here: tritonclient is optional

        return EngineNetworks(bundle, TRITON, engines=triton_engines(bundle, triton_url))
    chosen = choose_backend(backend)  # an unknown or unusable backend: EngineError, a one-line UserError
    if chosen == "torch":
        if precision != "fp32":
            raise EngineError(f"the torch backend runs FP32 only, not {precision}; choose onnxruntime or tensorrt")
        return TorchNetworks(bundle)
    return EngineNetworks(bundle, chosen, precision, EngineOptions(threads=threads))
