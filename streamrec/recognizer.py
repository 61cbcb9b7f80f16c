"""The recognition stage: a stream's newest audio window and recent frames -> per-modality and fused scores.

Written against the small `Networks` protocol (numpy in, numpy out), so the same stage runs on the
bundle's torch modules (`TorchNetworks`) or on exported engines. One call takes the updates due on
every stream at once and batches them: one audio-network call for all windows, one frame-network
call for all frames not seen before (frame embeddings are cached per stream: at 1 fps a frame is
reused by every update of the next k seconds), one fusion call.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .bundle import Bundle
from .errors import UserError
from .features import FrameConfig, writable_array
from .types import AudioWindow, Frame, Recognition

log = logging.getLogger(__name__)

SILENCE_DB = -200.0  # dBFS reported for an all-zero window
FRAME_CACHE = 32  # frame embeddings kept per stream (k is 5-10 at 1 fps)


@dataclass(frozen=True)
class NetworkInfo:
    """What the runtime needs to know about a bundle's networks to feed them."""

    classes: tuple[str, ...]
    has_audio: bool
    has_video: bool
    has_fusion: bool
    sample_rate: int = 16000  # Hz of the audio windows
    window_samples: int = 16000  # samples per audio window
    background: bool = False  # the audio outputs end with a "no instrument" column
    frames: FrameConfig = FrameConfig()  # frame rate and preprocessing
    k_frames: int = 5  # frame slots of the fusion network
    audio_dim: int = 0  # audio embedding size
    video_dim: int = 0  # frame embedding size

    def __post_init__(self) -> None:
        if not (self.has_audio or self.has_video):
            raise ValueError("a model for the runtime needs an audio or a video network")
        if self.k_frames <= 0:
            raise ValueError(f"k_frames must be positive, got {self.k_frames}")

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> NetworkInfo:
        """Read from the manifest alone, so an engine backend gets the same description."""
        from train.audio_setup import AudioSetup

        audio = video = fusion = None
        if bundle.has("audio"):
            audio = bundle.network("audio")
        if bundle.has("video"):
            video = bundle.network("video")
        if bundle.has("fusion"):
            fusion = bundle.network("fusion")
        setup = AudioSetup.from_dict(audio["setup"]) if audio else None
        return cls(
            classes=bundle.classes,
            has_audio=audio is not None,
            has_video=video is not None,
            has_fusion=fusion is not None,
            sample_rate=setup.frontend.sample_rate if setup else 16000,
            window_samples=setup.frontend.window_samples if setup else 16000,
            background=setup.background if setup else False,
            frames=FrameConfig(**video["frames"]) if video and "frames" in video else FrameConfig(),
            k_frames=fusion["dims"]["k_frames"] if fusion else 5,
            audio_dim=audio["dims"]["embedding_dim"] if audio else 0,
            video_dim=video["dims"]["embedding_dim"] if video else 0,
        )


class Networks(Protocol):
    """A bundle's networks behind numpy arrays; `info` says what they expect."""

    info: NetworkInfo

    def audio(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, window_samples) float32 -> probabilities (n, outputs) with a last background column when
        info.background, and embeddings (n, audio_dim)."""
        ...

    def frames(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, size, size, 3) uint8 RGB -> probabilities (n, classes), embeddings (n, video_dim)."""
        ...

    # audio() is frontend() then audio_features(); the two halves are timed apart by the benchmark.
    def frontend(self, windows: np.ndarray) -> np.ndarray:
        """(n, window_samples) float32 -> log-mel (n, n_mels, frames) float32."""
        ...

    def audio_features(self, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log-mel (n, n_mels, frames) -> what audio() returns."""
        ...

    def fuse(self, audio: np.ndarray, frames: np.ndarray, present: np.ndarray) -> np.ndarray:
        """(n, audio_dim), (n, k, video_dim), (n, 2) presence mask -> probabilities (n, classes)."""
        ...


class TorchNetworks:
    """The bundle's torch modules on the CPU: the audio network with its log-mel front end, the
    frame network (trunk + head) and the fusion network, as train.train_fusion.Extractors uses them."""

    def __init__(self, bundle: Bundle) -> None:
        import torch

        from train.audio_setup import AudioSetup
        from train.models import load_network
        from train.models.audio import outputs_probabilities

        from .features import LogMel

        self._torch = torch
        self.info = NetworkInfo.from_bundle(bundle)
        self._audio = load_network(bundle, "audio") if self.info.has_audio else None
        self._video = load_network(bundle, "video") if self.info.has_video else None
        self._fusion = load_network(bundle, "fusion") if self.info.has_fusion else None
        self._logmel = None
        self._audio_probabilities = False
        if self._audio is not None:
            setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
            self._logmel = LogMel(setup.frontend).eval()
            self._audio_probabilities = outputs_probabilities(self._audio.dims)
        log.info(
            "torch networks from %s: audio %s, video %s, fusion %s",
            bundle.root,
            *(type(m).__name__ if m is not None else "none" for m in (self._audio, self._video, self._fusion)),
        )

    def audio(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.audio_features(self.frontend(windows))

    def frontend(self, windows: np.ndarray) -> np.ndarray:
        if self._logmel is None:
            raise RuntimeError("this bundle has no audio network")
        with self._torch.inference_mode():
            return self._logmel(self._torch.from_numpy(writable_array(windows, np.float32))).numpy()

    def audio_features(self, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        if self._audio is None:
            raise RuntimeError("this bundle has no audio network")
        with torch.inference_mode():
            features = torch.from_numpy(writable_array(logmel, np.float32))
            embeddings = self._audio.embed(features)
            if self._audio_probabilities:  # the attention model gives probabilities itself
                probabilities = self._audio(features)
            else:
                probabilities = torch.softmax(self._audio.classifier(embeddings), dim=1)
        return probabilities.numpy(), embeddings.numpy()

    def frames(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from .features import frames_to_tensor

        torch = self._torch
        if self._video is None:
            raise RuntimeError("this bundle has no video network")
        with torch.inference_mode():
            embeddings = self._video.head.project(self._video.trunk(frames_to_tensor(writable_array(images, np.uint8))))
            probabilities = torch.softmax(self._video.head.classifier(embeddings), dim=1)
        return probabilities.numpy(), embeddings.numpy()

    def fuse(self, audio: np.ndarray, frames: np.ndarray, present: np.ndarray) -> np.ndarray:
        torch = self._torch
        if self._fusion is None:
            raise RuntimeError("this bundle has no fusion network")
        with torch.inference_mode():
            logits = self._fusion(*(torch.from_numpy(writable_array(x, np.float32)) for x in (audio, frames, present)))
            return torch.softmax(logits, dim=1).numpy()


BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def load_networks(bundle_path: str | Path | None = None, backend: str = "auto", threads: int | None = None) -> Networks:
    """The networks of a bundle (default: the bundled model) on one inference backend.

    "auto" picks TensorRT with a CUDA GPU, else ONNX Runtime, else torch (engines.loader says why);
    engines are exported and cached beside the bundle on first use. threads: ONNX Runtime intra-op
    threads per network (None: one per core, up to 4).
    """
    bundle = Bundle.load(bundle_path)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if backend == "torch":
        return TorchNetworks(bundle)
    from engines.loader import choose_backend
    from engines.networks import EngineNetworks

    chosen = choose_backend(backend)
    if chosen == "torch":
        return TorchNetworks(bundle)
    from engines.loader import EngineOptions

    return EngineNetworks(bundle, chosen, options=EngineOptions(threads=threads))


@dataclass(frozen=True)
class Request:
    """One update due on one stream: its newest audio window (None without audio) and its recent
    frames, oldest first (empty without video; at most k are used)."""

    stream: str
    window: AudioWindow | None
    frames: tuple[Frame, ...] = ()


def energy_db(samples: np.ndarray) -> float:
    """RMS level of a window in dBFS."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else SILENCE_DB


class Recognizer:
    """The stage: requests of any streams -> one Recognition each, in order; reset() per stream."""

    def __init__(self, networks: Networks, cache_frames: int = FRAME_CACHE) -> None:
        if cache_frames < networks.info.k_frames:
            raise ValueError(f"the frame cache ({cache_frames}) must hold at least k = {networks.info.k_frames} frames")
        self.networks = networks
        self.info = networks.info
        self.cache_frames = cache_frames
        self._cache: dict[str, OrderedDict[tuple[float, float], tuple[np.ndarray, np.ndarray]]] = {}
        # Frames being embedded by another thread (prime() runs beside __call__ in the runtime): a
        # caller that needs one waits for it instead of running the frame network on it again.
        self._in_flight: dict[tuple[str, tuple[float, float]], threading.Event] = {}
        self._lock = threading.Lock()

    def reset(self, stream: str | None = None) -> None:
        """Forget cached frame results of one stream (all streams when None)."""
        with self._lock:
            if stream is None:
                self._cache.clear()
            else:
                self._cache.pop(stream, None)

    def prime(self, frames: Mapping[str, Sequence[Frame]]) -> int:
        """Runs the frame network, in one batch, on the frames of any streams not seen yet, ahead of the
        updates that need them (the runtime calls this from its own thread as frames arrive).
        Returns how many frames it ran."""
        return self._embed_frames([(stream, list(f)) for stream, f in frames.items()])

    def _embed_frames(self, wanted: list[tuple[str, list[Frame]]]) -> int:
        if not self.info.has_video:
            return 0
        mine: dict[tuple[str, tuple[float, float]], Frame] = {}
        others: list[threading.Event] = []
        with self._lock:
            for stream, frames in wanted:
                cache = self._cache.setdefault(stream, OrderedDict())
                for f in frames:
                    key = (stream, f.key)
                    if f.key in cache or key in mine:
                        continue
                    if key in self._in_flight:
                        others.append(self._in_flight[key])
                    else:
                        mine[key] = f
                        self._in_flight[key] = threading.Event()
        try:
            if mine:
                probabilities, embeddings = self.networks.frames(np.stack([f.image for f in mine.values()]))
                with self._lock:
                    for (stream, key), p, e in zip(mine, probabilities, embeddings):
                        cache = self._cache.setdefault(stream, OrderedDict())
                        cache[key] = (p, e)
                        while len(cache) > self.cache_frames:
                            cache.popitem(last=False)
        finally:
            with self._lock:
                for key in mine:
                    self._in_flight.pop(key).set()
        for event in others:
            event.wait()
        return len(mine)

    def __call__(self, requests: Sequence[Request]) -> list[Recognition]:
        if not requests:
            return []
        info = self.info
        used = [list(r.frames[-info.k_frames :]) if info.has_video else [] for r in requests]
        self._embed_frames([(r.stream, frames) for r, frames in zip(requests, used)])
        with self._lock:
            frame_results = [[self._cache[r.stream][f.key] for f in frames] for r, frames in zip(requests, used)]
        audio_rows = [i for i, r in enumerate(requests) if r.window is not None and info.has_audio]
        raw_audio: dict[int, np.ndarray] = {}
        audio_embeddings: dict[int, np.ndarray] = {}
        if audio_rows:
            windows = np.stack([requests[i].window.samples for i in audio_rows])  # type: ignore[union-attr]
            if windows.shape[1] != info.window_samples:
                raise ValueError(f"audio windows must hold {info.window_samples} samples, got {windows.shape[1]}")
            probabilities, embeddings = self.networks.audio(windows)
            raw_audio, audio_embeddings = dict(zip(audio_rows, probabilities)), dict(zip(audio_rows, embeddings))
        audio: list[np.ndarray | None] = []
        background: list[float | None] = []
        for i in range(len(requests)):
            raw = raw_audio.get(i)
            if raw is not None and info.background:
                background.append(float(raw[-1]))
                raw = raw[:-1] / max(float(raw[:-1].sum()), 1e-9)  # renormalised over the taxonomy
            else:
                background.append(None)
            audio.append(raw)
        video = [np.mean([p for p, _ in results], axis=0) if results else None for results in frame_results]
        if info.has_fusion:
            fused = self._fuse(audio_embeddings, frame_results)
        else:  # a bundle without a fusion network: the mean of the modalities present
            fused = [np.mean([m for m in (a, v) if m is not None], axis=0) for a, v in zip(audio, video)]
        return [
            Recognition(
                fused[i],
                audio[i],
                video[i],
                background[i],
                energy_db(r.window.samples) if r.window is not None else None,
            )
            for i, r in enumerate(requests)
        ]

    def _fuse(
        self, audio_embeddings: dict[int, np.ndarray], frame_results: list[list[tuple[np.ndarray, np.ndarray]]]
    ) -> list[np.ndarray]:
        """The fusion network on every request at once, inputs built by fusion_inputs as in evaluation."""
        import torch

        from train.models.fusion import FusionDims, fusion_inputs

        info = self.info
        dims = FusionDims(len(info.classes), info.audio_dim or 1, info.video_dim or 1, k_frames=info.k_frames)
        rows = []
        for i, results in enumerate(frame_results):
            audio = torch.from_numpy(audio_embeddings[i]) if i in audio_embeddings else None
            frames = torch.from_numpy(np.stack([e for _, e in results])) if results else None
            rows.append(fusion_inputs(audio, frames, dims))
        audio_in, frames_in, present = (torch.cat(parts).numpy() for parts in zip(*rows))
        return list(self.networks.fuse(audio_in, frames_in, present))
