"""The order in which a file source releases what it decoded: the media-time merge of its audio and video
items (Interleaver), and real-time audio held until it completes an update window (WindowHold)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from streamrec.runtime.windowing import WindowSpec


@dataclass(frozen=True)
class Pending:
    """A decoded item waiting to be released: key is its media time of availability."""

    key: float
    kind: str  # "audio" | "video"
    data: np.ndarray
    media_time: float


class Interleaver:
    """Releases items of several time-ordered streams in media-time order (a k-way merge that waits
    at most max_lead seconds for a stream that has fallen silent)."""

    def __init__(self, kinds: tuple[str, ...], max_lead: float) -> None:
        if max_lead < 0:
            raise ValueError(f"max_lead must be zero or more seconds, got {max_lead}")
        self.max_lead = max_lead
        self._queues: dict[str, deque[Pending]] = {kind: deque() for kind in kinds}

    def push(self, item: Pending) -> None:
        self._queues[item.kind].append(item)

    def ready(self) -> list[Pending]:
        out = []
        queues = self._queues.values()
        while True:  # runs for every packet: plain loops, no per-call dicts or lambdas
            first: deque[Pending] | None = None  # the queue whose head comes first (the earlier kind on ties)
            waiting = False  # some stream has nothing queued
            for q in queues:
                if not q:
                    waiting = True
                elif first is None or q[0].key < first[0].key:
                    first = q
            if first is None:
                return out
            if waiting and first[-1].key - first[0].key < self.max_lead:
                return out
            out.append(first.popleft())

    def flush(self) -> list[Pending]:
        items = sorted((i for q in self._queues.values() for i in q), key=lambda i: i.key)
        for q in self._queues.values():
            q.clear()
        return items


class WindowHold:
    """A real-time connection's audio, held until it completes one of the update windows (counted from
    the connection's first sample, as the runtime's windower restarts at a reconnection).

    Nothing downstream reads a sample before its window is whole, so one delivery per update (two a
    second) does what one per packet did (20 to 50 a second), without their pacing waits, ring writes and
    wake-ups. No latency is added: the packet that completes a window is released when it is due, as
    before, with the held audio in front of it.
    """

    def __init__(self, windows: WindowSpec) -> None:
        self._hop = windows.hop
        self._next_end = windows.size  # samples of this connection
        self._taken = 0  # samples of this connection held or released so far
        self._held: list[np.ndarray] = []
        self._start = 0.0  # media time of the first held sample
        self.key = 0.0  # media time at which the held audio became available

    def __bool__(self) -> bool:
        return bool(self._held)

    def add(self, samples: np.ndarray, media_time: float, key: float) -> bool:
        """Holds the samples of one item; True once the held audio completes a window (take it then)."""
        if not self._held:
            self._start = media_time
        self._held.append(samples)
        self._taken += len(samples)
        self.key = key
        return self._taken >= self._next_end

    def take(self) -> tuple[np.ndarray, float]:
        """The held audio as one chunk: (samples, media time of the first)."""
        while self._next_end <= self._taken:
            self._next_end += self._hop
        samples = self._held[0] if len(self._held) == 1 else np.concatenate(self._held)
        self._held = []
        return samples, self._start
