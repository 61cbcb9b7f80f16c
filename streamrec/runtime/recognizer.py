"""The recognition stage: a stream's newest audio window and recent frames -> per-modality and fused scores.

Written against the small `Networks` protocol (numpy in, numpy out), so the same stage runs on the
bundle's torch modules (`TorchNetworks`) or on exported engines. One call takes the updates due on
every stream at once and batches them: one audio-network call for all windows, one frame-network
call for all frames not seen before (frame embeddings are cached per stream: at 1 fps a frame is
reused by every update of the next k seconds), one fusion call. prime() embeds frames ahead of the
updates, from any number of threads at once (each claims its own frames, oldest first). The fused scores
follow the bundle's FusionRule: the fusion network, or the product of the audio and frame probabilities.

A bundle's tagger (streamrec.core.models.tagger) is several times slower than the audio network, so it runs off
the emission path, one update late: an update mixes into its audio the tagger's answer on its stream's previous
window (half a second older at the default hop, overlapping it), which tag() computed meanwhile on the runtime's
tagger thread. A stream read as fast as possible (a file) waits for that answer, or computes it, so a file gives
the same answers however fast it is read. A live stream never waits: its update uses the answer if it is there,
and the audio network alone if not, so under load the tagger is what gives way (the runtime runs it at the lowest
CPU priority) and the streams keep real time. An answer on a window that ended more than a window's length before
the update's (after a gap or a reconnection) is not used.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from streamrec.core.networks import Networks
from streamrec.core.scores import FusionRule, fusion_inputs, split_background
from streamrec.runtime.types import AudioWindow, Frame, Recognition

log = logging.getLogger(__name__)

SILENCE_DB = -200.0  # dBFS reported for an all-zero window
FRAME_CACHE = 32  # frame embeddings kept per stream (k is 5-10 at 1 fps)
# Windows per tagger call: musicnn's activations grow with the batch (about 10 MB a window before pooling), and at
# 100 streams one call on every window took 2 GB more peak memory; larger batches gain little on a CPU.
TAGGER_BATCH = 8


@dataclass(frozen=True)
class Request:
    """One update due on one stream: its newest audio window (None without audio) and its recent
    frames, oldest first (empty without video; at most k are used); realtime: the stream is live (the tagger's
    lane never holds its updates up)."""

    stream: str
    window: AudioWindow | None
    frames: tuple[Frame, ...] = ()
    realtime: bool = False

    def times(self) -> tuple[float, float]:
        """(media time, capture time): the window's end, else the newest frame's time; the newest capture."""
        if self.window is not None:
            return self.window.end_time, max([self.window.capture_time] + [f.capture_time for f in self.frames])
        return self.frames[-1].media_time, self.frames[-1].capture_time


def energy_db(samples: np.ndarray) -> float:
    """RMS level of a window in dBFS."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else SILENCE_DB


class BatchSizes:
    """How many items each batched network call took, per kind ("updates", "frames"); thread-safe."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[int]] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, size: int) -> None:
        if size > 0:
            with self._lock:
                self._counts.setdefault(kind, Counter())[size] += 1

    def summary(self) -> dict[str, dict[str, float]]:
        """Per kind: calls, items, mean and largest batch."""
        with self._lock:
            counts = {kind: Counter(c) for kind, c in self._counts.items()}
        out = {}
        for kind, c in counts.items():
            calls, items = sum(c.values()), sum(size * n for size, n in c.items())
            out[kind] = {"calls": calls, "items": items, "mean": items / calls, "max": max(c)}
        return out


class Recognizer:
    """The stage: requests of any streams -> one Recognition each, in order; reset() per stream."""

    def __init__(
        self, networks: Networks, fusion_rule: FusionRule | None = None, cache_frames: int = FRAME_CACHE
    ) -> None:
        """fusion_rule: None, the fusion network where there is one and the product otherwise."""
        if cache_frames < networks.info.k_frames:
            raise ValueError(f"the frame cache ({cache_frames}) must hold at least k = {networks.info.k_frames} frames")
        self.networks = networks
        self.info = networks.info
        self.fusion_rule = fusion_rule or FusionRule.default(self.info.has_fusion)
        if self.fusion_rule.kind == "network" and not self.info.has_fusion:
            raise ValueError("the fusion rule is the fusion network, but these networks have none")
        self.cache_frames = cache_frames
        self.uses_tagger = self.info.has_tagger and self.fusion_rule.tagger_share > 0  # the tagger's lane runs
        self._cache: dict[str, OrderedDict[tuple[float, float], tuple[np.ndarray, np.ndarray]]] = {}
        # Frames being embedded by another thread (prime() runs beside __call__ in the runtime): a
        # caller that needs one waits for it instead of running the frame network on it again.
        self._in_flight: dict[tuple[str, tuple[float, float]], threading.Event] = {}
        # The tagger's lane: per stream, the newest window left for the tagger, the thread tagging one, and the
        # newest answer (the window's end time, probabilities).
        self._untagged: dict[str, AudioWindow] = {}
        self._tagging: dict[str, threading.Event] = {}
        self._tags: dict[str, tuple[float, np.ndarray]] = {}
        self._lock = threading.Lock()
        self.batches = BatchSizes()  # sizes of the batched network calls ("updates", "frames")

    def reset(self, stream: str | None = None) -> None:
        """Forget cached frame results and tagger answers of one stream (all streams when None)."""
        with self._lock:
            for state in (self._cache, self._untagged, self._tags):
                if stream is None:
                    state.clear()
                else:
                    state.pop(stream, None)

    def prime(self, frames: Mapping[str, Sequence[Frame]], limit: int | None = None) -> int:
        """Runs the frame network, in one batch, on at most `limit` frames of any streams not seen yet (the
        oldest captured first), ahead of the updates that need them. The runtime calls this from its frame
        workers as frames arrive; frames another thread is embedding are left to it, not awaited.
        Returns how many frames it ran."""
        return self._embed_frames([(stream, list(f)) for stream, f in frames.items()], limit, wait=False)

    def tag(self) -> int:
        """Runs the tagger, TAGGER_BATCH windows a call, on the newest window every stream's updates left for it (an
        older one not tagged yet was replaced: dropped). The runtime calls this from its tagger thread. Returns how
        many."""
        return self._tag_left(None, wait=False) if self.uses_tagger else 0

    def _tag_left(self, streams: set[str] | None, wait: bool) -> int:
        """Runs the tagger on the windows left by earlier updates of `streams` (None: all streams); with `wait`,
        also waits for those another thread is tagging. Returns how many it ran."""
        with self._lock:
            mine = {s: w for s, w in self._untagged.items() if streams is None or s in streams}
            for stream in mine:
                del self._untagged[stream]
                self._tagging[stream] = threading.Event()
            others = [
                e for s, e in self._tagging.items() if wait and s not in mine and (streams is None or s in streams)
            ]
        try:
            if mine:
                probabilities = self._run_tagger(list(mine.values()))
                with self._lock:
                    for (stream, window), p in zip(mine.items(), probabilities):
                        self._tags[stream] = (window.end_time, p)
        finally:
            with self._lock:
                for stream in mine:
                    self._tagging.pop(stream).set()
        for event in others:
            event.wait()
        return len(mine)

    def _run_tagger(self, windows: list[AudioWindow]) -> np.ndarray:
        """The tagger's probabilities on windows, TAGGER_BATCH at a time."""
        parts = [
            self.networks.tagger(np.stack([w.samples for w in windows[i : i + TAGGER_BATCH]]))
            for i in range(0, len(windows), TAGGER_BATCH)
        ]
        return np.concatenate(parts)

    def _lagged_tags(self, requests: Sequence[Request], rows: list[int]) -> dict[int, np.ndarray]:
        """The tagger's probabilities on each audio request's previous window of its stream, where that ended at
        most a window's length before the request's and, for a live stream, is already tagged. A file's window left
        untagged, or its earlier window in the same batch, is tagged here; the last window of every stream in the
        batch is left for tag()."""
        self._tag_left({requests[i].stream for i in rows if not requests[i].realtime}, wait=True)
        window_seconds = self.info.window_samples / self.info.sample_rate
        previous: dict[str, AudioWindow] = {}
        from_batch: dict[int, AudioWindow] = {}
        answers: dict[int, tuple[float, np.ndarray]] = {}
        with self._lock:
            for i in rows:
                window = cast(AudioWindow, requests[i].window)  # rows: the requests with audio
                if requests[i].stream in previous:
                    if not requests[i].realtime:
                        from_batch[i] = previous[requests[i].stream]
                elif requests[i].stream in self._tags:  # a live stream's may be older: the lag check drops it
                    answers[i] = self._tags[requests[i].stream]
                previous[requests[i].stream] = window
        if from_batch:
            probabilities = self._run_tagger(list(from_batch.values()))
            answers.update({i: (w.end_time, p) for (i, w), p in zip(from_batch.items(), probabilities)})
        with self._lock:
            self._untagged.update(previous)
        lagged = {}
        for i, (end, p) in answers.items():
            lag = requests[i].window.end_time - end  # type: ignore[union-attr]
            if 0 < lag <= window_seconds + 1e-6:
                lagged[i] = p
        return lagged

    def _embed_frames(self, wanted: list[tuple[str, list[Frame]]], limit: int | None = None, wait: bool = True) -> int:
        if not self.info.has_video:
            return 0
        mine: dict[tuple[str, tuple[float, float]], Frame] = {}
        others: list[threading.Event] = []
        with self._lock:
            todo: dict[tuple[str, tuple[float, float]], Frame] = {}
            for stream, frames in wanted:
                cache = self._cache.setdefault(stream, OrderedDict())
                for f in frames:
                    key = (stream, f.key)
                    if f.key in cache or key in todo:
                        continue
                    if key in self._in_flight:
                        others.append(self._in_flight[key])
                    else:
                        todo[key] = f
            # Oldest captured first: under load the frames nearest their deadline go first.
            for key in sorted(todo, key=lambda k: todo[k].capture_time)[:limit]:
                mine[key] = todo[key]
                self._in_flight[key] = threading.Event()
        self.batches.add("frames", len(mine))
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
        for event in others if wait else ():
            event.wait()
        return len(mine)

    def __call__(self, requests: Sequence[Request]) -> list[Recognition]:
        if not requests:
            return []
        self.batches.add("updates", len(requests))
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
        tags = self._lagged_tags(requests, audio_rows) if self.uses_tagger and audio_rows else {}
        audio: list[np.ndarray | None] = []
        background: list[float | None] = []
        for i in range(len(requests)):
            raw = raw_audio.get(i)
            if raw is None:
                audio.append(None)
                background.append(None)
                continue
            instruments, no_instrument = split_background(raw, info.background)
            audio.append(self.fusion_rule.calibrate("audio", self.fusion_rule.mix_audio(instruments, tags.get(i))))
            background.append(None if no_instrument is None else float(no_instrument))
        newest = -(self.fusion_rule.video_frames or info.k_frames)  # the frames whose mean is the frame modality
        video = [
            self.fusion_rule.calibrate("video", np.mean([p for p, _ in results[newest:]], axis=0)) if results else None
            for results in frame_results
        ]
        if self.fusion_rule.kind == "network":
            fused = self._fuse(audio_embeddings, frame_results)
        else:
            fused = [self.fusion_rule.product(a, v) for a, v in zip(audio, video)]
        return [
            Recognition(
                fused[i],
                audio[i],
                video[i],
                background[i],
                energy_db(r.window.samples) if r.window is not None else None,
                used[i][-1].media_time if used[i] else None,
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
