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

import numpy as np

from streamrec.core.networks import Networks
from streamrec.core.scores import fusion_inputs, split_background
from streamrec.runtime.types import AudioWindow, Frame, Recognition

log = logging.getLogger(__name__)

SILENCE_DB = -200.0  # dBFS reported for an all-zero window
FRAME_CACHE = 32  # frame embeddings kept per stream (k is 5-10 at 1 fps)


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
            if raw is None:
                audio.append(None)
                background.append(None)
                continue
            instruments, no_instrument = split_background(raw, info.background)
            audio.append(instruments)
            background.append(None if no_instrument is None else float(no_instrument))
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
        info = self.info
        rows = [
            fusion_inputs(
                audio_embeddings[i][None] if i in audio_embeddings else None,
                np.stack([e for _, e in results]) if results else None,
                info.k_frames,
                info.audio_dim or 1,
                info.video_dim or 1,
            )
            for i, results in enumerate(frame_results)
        ]
        audio_in, frames_in, present = (np.concatenate(parts) for parts in zip(*rows))
        return list(self.networks.fuse(audio_in, frames_in, present))
