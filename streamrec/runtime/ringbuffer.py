"""Thread-safe ring buffers between a source's thread and the inference thread.

Both keep the NEWEST data on overflow: a live stream that outruns inference loses its oldest
audio, never the present (mediapipe's audio_record keeps the oldest instead; not copied here).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from streamrec.runtime.types import AudioChunk, AudioWindow, Frame


@dataclass(frozen=True)
class _ChunkMark:
    """Where a written chunk starts in the stream's sample count, and its stamps."""

    start_index: int
    media_time: float
    capture_time: float


class AudioRing:
    """The last `capacity` samples of one stream, with the stamps of the chunks they came from.

    Samples are counted from the start of the stream (`total_written`); a window is addressed by
    the index just after its last sample, so a consumer that falls behind still reads exactly the
    window it asks for as long as it has not been overwritten.
    """

    def __init__(self, capacity: int, sample_rate: int) -> None:
        if capacity <= 0:
            raise ValueError(f"the ring capacity must be a positive number of samples, got {capacity}")
        if sample_rate <= 0:
            raise ValueError(f"the sample rate must be positive, got {sample_rate}")
        self.capacity = capacity
        self.sample_rate = sample_rate
        self._data = np.zeros(capacity, np.float32)
        self._total = 0
        self._marks: deque[_ChunkMark] = deque()
        self._lock = threading.Lock()

    @property
    def total_written(self) -> int:
        with self._lock:
            return self._total

    def write(self, chunk: AudioChunk) -> None:
        if chunk.sample_rate != self.sample_rate:
            raise ValueError(f"this ring holds {self.sample_rate} Hz audio; got a chunk at {chunk.sample_rate} Hz")
        samples = chunk.samples
        if len(samples) == 0:
            return
        with self._lock:
            start = self._total
            self._marks.append(_ChunkMark(start, chunk.media_time, chunk.capture_time))
            if len(samples) > self.capacity:  # only the newest part can be kept
                skipped = len(samples) - self.capacity
                samples, start = samples[skipped:], start + skipped
            position = start % self.capacity
            first = min(len(samples), self.capacity - position)
            self._data[position : position + first] = samples[:first]
            self._data[: len(samples) - first] = samples[first:]
            self._total += len(chunk.samples)
            oldest = self._total - self.capacity
            # Keep the mark of the chunk holding the oldest retained sample; drop older ones.
            while len(self._marks) > 1 and self._marks[1].start_index <= oldest:
                self._marks.popleft()

    def _mark_of(self, index: int) -> _ChunkMark:
        """The chunk containing sample `index` (callers hold the lock)."""
        found = self._marks[0]
        for mark in self._marks:
            if mark.start_index > index:
                break
            found = mark
        return found

    def read_window(self, end_index: int, n: int, pad: bool = False) -> AudioWindow | None:
        """The n samples ending just before sample `end_index`; None when some were overwritten.

        With pad, a window asked for before n samples exist holds the samples so far followed by
        zeros (the offline evaluation's padding of clips shorter than a window).
        """
        if n <= 0 or n > self.capacity:
            raise ValueError(f"a window must hold 1 to {self.capacity} samples, got {n}")
        with self._lock:
            if end_index > self._total or end_index <= 0:
                raise ValueError(f"sample {end_index} is not in this stream of {self._total} samples")
            start = max(0, end_index - n)
            if (end_index < n and not pad) or start < self._total - self.capacity:
                return None  # not enough samples yet, or some already overwritten
            index = np.arange(start, end_index) % self.capacity
            samples = np.zeros(n, np.float32)
            samples[: len(index)] = self._data[index]
            mark = self._mark_of(end_index - 1)
            end_time = mark.media_time + (end_index - mark.start_index) / self.sample_rate
            return AudioWindow(samples, end_time, mark.capture_time, end_index)

    def read_latest(self, n: int) -> tuple[np.ndarray, float]:
        """The newest n samples (fewer while fewer have been written) and the media time just after
        the newest one, in seconds (0.0 before anything was written)."""
        if n <= 0 or n > self.capacity:
            raise ValueError(f"a window must hold 1 to {self.capacity} samples, got {n}")
        with self._lock:
            if self._total == 0:
                return np.zeros(0, np.float32), 0.0
            start = max(0, self._total - n)
            samples = self._data[np.arange(start, self._total) % self.capacity]
            mark = self._mark_of(self._total - 1)
            return samples, mark.media_time + (self._total - mark.start_index) / self.sample_rate


class FrameRing:
    """The last `capacity` frames of one stream, oldest first, and how many were ever written."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"the frame ring must hold at least one frame, got {capacity}")
        self.capacity = capacity
        self._frames: deque[Frame] = deque(maxlen=capacity)
        self._total = 0
        self._lock = threading.Lock()

    @property
    def total_written(self) -> int:
        with self._lock:
            return self._total

    def write(self, frame: Frame) -> None:
        with self._lock:
            self._frames.append(frame)
            self._total += 1

    def clear(self) -> None:
        """Forgets the kept frames (the count written goes on): the stream starts over."""
        with self._lock:
            self._frames.clear()

    def latest(self, n: int | None = None) -> list[Frame]:
        """The newest n frames (all kept frames when n is None), oldest first."""
        with self._lock:
            frames = list(self._frames)
        return frames if n is None else frames[max(0, len(frames) - n) :]

    def snapshot(self) -> tuple[list[Frame], int]:
        """All kept frames, oldest first, with the count ever written (taken together)."""
        with self._lock:
            return list(self._frames), self._total
