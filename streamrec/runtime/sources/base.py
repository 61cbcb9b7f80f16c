"""What every source shares: the format it must deliver, the Source protocol, pacing, reconnection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from streamrec.core.errors import UserError
from streamrec.core.features import FrameConfig
from streamrec.runtime.types import SourceItem
from streamrec.runtime.windowing import WindowSpec

# Called by a source for every item; may block (back-pressure for sources not paced in real time).
Emit = Callable[[SourceItem], None]


class SourceError(UserError):
    """A source that cannot be used at all (a missing device or file); the message says which and why."""


@dataclass(frozen=True)
class CaptureFormat:
    """What sources deliver: mono audio at the audio network's rate, frames preprocessed for the frame network."""

    sample_rate: int  # Hz
    frames: FrameConfig = FrameConfig()
    # The update schedule's audio windows, counted from a connection's first sample: real-time sources
    # may hold audio until it completes a window, since nothing reads a sample sooner. None: no holding.
    windows: WindowSpec | None = None
    frame_phase: float = 0.0  # seconds after each 1/fps tick a frame is kept (media.FrameSampler)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"the sample rate must be positive, got {self.sample_rate}")


class Source(Protocol):
    """One input of a stream. `run` blocks until the input ends or `stop` is set, and reports through
    `emit`: SourceInfo once open, AudioChunk and Frame items, and StateChange (started, reconnecting,
    ended, error). It never raises for a bad input: that ends its stream with state error."""

    description: str

    def prepare(self) -> None:
        """Checks (and acquires) what the source needs before anything starts; raises SourceError."""
        ...

    def run(self, emit: Emit, stop: threading.Event) -> None: ...


class Pacer:
    """Real-time pacing: releases an item at the wall time its media time is due.

    The anchor (wall time of media time 0) only moves later: an item that arrives late (a network
    stall) re-anchors the clock, so a burst after it is not replayed faster than real time.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.reset()

    def reset(self) -> None:
        self._anchor: float | None = None

    def start(self, media_time: float) -> None:
        """Starts the clock at an item that is not waited for (audio held for its window), unless it runs:
        the first item, released or not, ties media time to wall time, as it would if released."""
        if self.enabled and self._anchor is None:
            self._anchor = time.monotonic() - media_time

    def wait(self, media_time: float, stop: threading.Event) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._anchor is None or now - media_time > self._anchor:
            self._anchor = now - media_time
            return
        stop.wait(self._anchor + media_time - now)


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential back-off between attempts to reopen a URL, giving up after a long outage."""

    initial: float = 0.5  # seconds before the first retry
    factor: float = 2.0
    max_delay: float = 5.0  # seconds
    give_up_after: float | None = 60.0  # seconds without a working connection; None = never

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.max_delay < self.initial:
            raise ValueError(
                f"reconnect delays need initial > 0, factor >= 1 and max_delay >= initial; got {self.initial}, "
                f"{self.factor}, {self.max_delay}"
            )
        if self.give_up_after is not None and self.give_up_after <= 0:
            raise ValueError(f"give_up_after must be positive seconds or None, got {self.give_up_after}")

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(self.max_delay, delay * self.factor)
