"""Pure logic deciding when an update is due: audio windows by size and hop, frames at 1 fps.

No clocks and no I/O: the inference loop asks with the number of samples or frames written so far,
so the same decisions replay exactly on a file, fast or in real time. Frames are thinned to 1 fps
at the source with media.FrameSampler; here they are only chosen per update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamrec.core.media import FrameSampler
from streamrec.core.networks import NetworkInfo
from streamrec.runtime.types import Frame

DEFAULT_HOP_SECONDS = 0.5  # seconds between audio updates: two per 1 s window
FRAME_TOLERANCE = 1e-3  # seconds: a frame stamped 1.0 belongs with a window ending at 1.0

__all__ = ["DEFAULT_HOP_SECONDS", "AudioWindower", "FrameSampler", "FrameWindower", "WindowSpec", "frames_for_update"]


@dataclass(frozen=True)
class WindowSpec:
    """Audio windows of `size` samples, one ending every `hop` samples (the first at `size`)."""

    size: int
    hop: int

    def __post_init__(self) -> None:
        if self.size <= 0 or self.hop <= 0:
            raise ValueError(f"window size and hop must be positive sample counts, got {self.size} and {self.hop}")

    @classmethod
    def from_seconds(
        cls, sample_rate: int, window_seconds: float, hop_seconds: float = DEFAULT_HOP_SECONDS
    ) -> WindowSpec:
        if hop_seconds <= 0:
            raise ValueError(f"the hop must be a positive number of seconds, got {hop_seconds}")
        return cls(round(window_seconds * sample_rate), max(1, round(hop_seconds * sample_rate)))

    @classmethod
    def for_updates(cls, info: NetworkInfo, hop_seconds: float = DEFAULT_HOP_SECONDS) -> WindowSpec:
        """The audio network's windows, one ending every hop_seconds: the runtime's update schedule."""
        return cls.from_seconds(info.sample_rate, info.window_samples / info.sample_rate, hop_seconds)

    def ends(self, n_samples: int) -> list[int]:
        """Every window end a stream of n_samples gets: the offline view of the same schedule."""
        return list(range(self.size, n_samples + 1, self.hop))


class AudioWindower:
    """Which windows are due, given how many samples a stream has written so far.

    Window ends are sample counts since the stream began: size, size + hop, size + 2 hop, ...
    """

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        self._next_end = self.spec.size
        self.emitted = 0  # windows handed out
        self.skipped = 0  # windows passed over by latest_only

    @property
    def next_end(self) -> int:
        """The end of the next window not yet handed out."""
        return self._next_end

    def due(self, total_written: int, latest_only: bool = False, limit: int | None = None) -> list[int]:
        """Ends of the windows complete in total_written samples and not handed out yet, oldest first.

        latest_only keeps a lagging live stream at the present: only the newest complete window is
        returned and the older ones are skipped. limit hands out at most that many (the rest stay due).
        """
        if total_written < self._next_end:
            return []
        count = (total_written - self._next_end) // self.spec.hop + 1
        if latest_only and count > 1:
            self.skipped += count - 1
            self._next_end += (count - 1) * self.spec.hop
            count = 1
        if limit is not None:
            count = min(count, limit)
        ends = [self._next_end + i * self.spec.hop for i in range(count)]
        self._next_end += count * self.spec.hop
        self.emitted += count
        return ends

    def restart(self, total_written: int) -> None:
        """The stream starts over after total_written samples (a reconnection): the next window holds
        only samples written after them, never a mix of both sides of an outage."""
        self._next_end = total_written + self.spec.size

    def has_tail(self, total_written: int) -> bool:
        """Whether tail() would give a window (without handing it out)."""
        return not self.emitted and 0 < total_written < self.spec.size

    def tail(self, total_written: int) -> int | None:
        """At the end of a stream: the end of one zero-padded window for a stream shorter than one
        window (as the offline evaluation pads short clips); None otherwise."""
        if not self.has_tail(total_written):
            return None
        self.emitted += 1
        self._next_end = total_written + self.spec.hop
        return total_written


class FrameWindower:
    """For streams without audio: one update per new frame, counted since the stream began."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._done = 0
        self.skipped = 0

    @property
    def done(self) -> int:
        """Frames handed out or skipped so far."""
        return self._done

    def due(self, total_frames: int, latest_only: bool = False, limit: int | None = None) -> list[int]:
        """Counts (1-based) of the frames due as the newest frame of an update, oldest first."""
        pending = list(range(self._done + 1, total_frames + 1))
        if latest_only and len(pending) > 1:
            self.skipped += len(pending) - 1
            pending = pending[-1:]
        if limit is not None:
            pending = pending[:limit]
        if pending:
            self._done = pending[-1]
        return pending

    def restart(self, total_frames: int) -> None:
        """The stream starts over after total_frames frames (a reconnection): the next update is the
        next new frame."""
        self._done = total_frames


def frames_for_update(frames: Sequence[Frame], end_time: float, k: int, max_age: float) -> list[Frame]:
    """The newest k frames stamped at or before end_time and not older than max_age seconds before it.

    frames: oldest first. A frame decoded ahead of the audio (files interleave streams) waits for a
    later update, so a stream decoded fast and one played in real time use the same frames.
    """
    if k <= 0:
        raise ValueError(f"k must be a positive number of frames, got {k}")
    chosen = [f for f in frames if end_time - max_age <= f.media_time <= end_time + FRAME_TOLERANCE]
    return chosen[-k:]
