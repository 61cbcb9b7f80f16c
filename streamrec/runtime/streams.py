"""The runtime's per-stream state (rings, schedulers, smoother, the bookkeeping of its sources) and the
summaries a run returns; streamrec.runtime.pipeline drives them."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from streamrec.core.networks import NetworkInfo
from streamrec.runtime.ringbuffer import AudioRing, FrameRing
from streamrec.runtime.smoothing import Smoother, SmoothingOptions
from streamrec.runtime.sources import Source
from streamrec.runtime.types import SourceInfo, StateChange
from streamrec.runtime.windowing import AudioWindower, FrameWindower, WindowSpec

FRAME_SLACK = 8  # frames kept beyond the k the fusion network uses


@dataclass(frozen=True)
class StreamSummary:
    state: str  # final state: ended or error
    detail: str
    updates: int  # predictions emitted
    skipped: int  # windows passed over to stay real time, or overwritten before inference
    latency_p50_ms: float | None
    latency_p95_ms: float | None


@dataclass(frozen=True)
class RunSummary:
    streams: dict[str, StreamSummary]
    stopped_by: str | None = None  # "SIGINT", "SIGTERM", "stop()" when stopped before the end
    exit_code: int = 0  # 0, 2 when a stream ended in error (bad input), 128 + signal number when stopped by one
    # Sizes of the batched network calls, per kind ("updates", "frames"): calls, items, mean, max.
    batches: dict[str, dict[str, float]] = field(default_factory=dict)


class StreamState:
    """One stream's state: rings, schedulers, smoother and the bookkeeping of its sources."""

    def __init__(
        self,
        stream_id: str,
        sources: list[Source],
        realtime: bool,
        info: NetworkInfo,
        hop_seconds: float,
        lag_seconds: float,
        smoothing: SmoothingOptions,
        stall_seconds: float,
    ) -> None:
        self.id = stream_id
        self.sources = sources
        self.description = " + ".join(s.description for s in sources)
        self.realtime = realtime
        self.spec = WindowSpec.for_updates(info, hop_seconds)
        capacity = self.spec.size + round((lag_seconds + 2.0) * info.sample_rate)
        self.audio = AudioRing(capacity, info.sample_rate)
        self.frames = FrameRing(info.k_frames + FRAME_SLACK)
        self.windower = AudioWindower(self.spec)
        self.frame_windower = FrameWindower()
        self.smoother = Smoother(info.classes, smoothing)
        self.max_age = (info.k_frames + 1) / info.frames.fps  # seconds: older frames no longer describe the scene
        self.infos: dict[int, SourceInfo] = {}
        self.running = set(range(len(sources)))
        self.ends: list[StateChange] = []  # terminal states of finished sources
        self.driver: str | None = None  # "audio" or "video", once every source said what it has
        self.finished = False
        self.state = "waiting"
        self.last_input = time.monotonic()
        self.seq = 0
        self.lost = 0  # windows overwritten before inference reached them
        self.latencies: deque[float] = deque(maxlen=10000)
        self.frames_done = 0
        self.cond = threading.Condition()  # back-pressure: sources wait here for inference
        self.stall_after = stall_seconds  # seconds without data before a real-time stream counts as stalled
        self._restarted = False  # a reconnection the smoother has not heard of yet
        # Set by the stream's sources when what they wrote may make an update due, cleared by the inference
        # loop before it looks: with many streams, looking at every one on every wake was most of its CPU.
        self.pending = True

    def restart(self) -> None:
        """A source lost its connection and reconnects (called on its thread): what comes next starts
        the stream over, so that no window mixes audio from both sides of the outage, no update uses
        frames from before it, and the smoothed `active` set does not carry across it."""
        with self.cond:
            self.windower.restart(self.audio.total_written)
            self.frame_windower.restart(self.frames.total_written)
            self.frames.clear()
            self._restarted = True

    def take_restart(self) -> bool:
        """Whether the stream restarted since the last call (the inference thread then resets the smoother,
        which only it touches)."""
        with self.cond:
            restarted, self._restarted = self._restarted, False
            return restarted

    @property
    def oldest_needed(self) -> int:
        """First sample of the next window not yet evaluated: what a non-real-time source must not overwrite."""
        return self.windower.next_end - self.spec.size

    def decide_driver(self, has_audio_network: bool) -> None:
        if self.driver is None and len(self.infos) == len(self.sources):
            audio = any(i.audio for i in self.infos.values()) and has_audio_network
            self.driver = "audio" if audio else "video"

    def summary(self) -> StreamSummary:
        final = self.final_state() if self.ends else StateChange("ended", "stopped")
        latencies = np.array(self.latencies) if self.latencies else None
        return StreamSummary(
            final.state,
            final.detail,
            self.seq,
            self.windower.skipped + self.frame_windower.skipped + self.lost,
            float(np.percentile(latencies, 50)) if latencies is not None else None,
            float(np.percentile(latencies, 95)) if latencies is not None else None,
        )

    def final_state(self) -> StateChange:
        errors = [e for e in self.ends if e.state == "error"]
        if errors:
            return StateChange("error", "; ".join(e.detail for e in errors))
        return StateChange("ended", "; ".join(dict.fromkeys(e.detail for e in self.ends if e.detail)))
