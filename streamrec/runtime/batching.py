"""Cross-stream batching in the live runtime: which updates are due on each stream, and how the inference
loop fills one batched network call with the updates of many streams.

Like Triton's dynamic batcher (a preferred batch size and a maximum queue delay) and DeepStream's
nvstreammux (a batch size and a batched-push timeout): the inference loop takes every update due now, at
most `max_batch`; when the batch is not full it waits at most `batch_wait` seconds for more, but only while
another real-time stream is expected to complete a window before that deadline. One stream alone, streams
whose next window is further away, and streams decoded as fast as possible (their windows are due already
or wait for inference anyway) are never waited for, so batching adds no latency where no batch can fill.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from streamrec.runtime.recognizer import Request
from streamrec.runtime.streams import StreamState
from streamrec.runtime.windowing import frames_for_update

T = TypeVar("T")


def due_requests(stream: StreamState, budget: int, k: int) -> list[Request]:
    """The updates due on one stream, at most `budget`, oldest first: its complete audio windows (only the
    newest for a lagging real-time stream; a zero-padded tail for a stream shorter than one window once it
    ended), or, without audio, its new frames; each with its recent frames (at most k)."""
    due: list[Request] = []
    if stream.finished or stream.driver is None:
        return due
    if stream.driver == "audio":
        # Under the stream's lock: due() advances the windower, which lets a waiting source write
        # again (pipeline's back-pressure); it must not overwrite these windows before they are read.
        with stream.cond:
            ends = stream.windower.due(stream.audio.total_written, latest_only=stream.realtime, limit=budget)
            if not ends and not stream.running:
                tail = stream.windower.tail(stream.audio.total_written)
                ends = [tail] if tail is not None else []
            windows = [stream.audio.read_window(end, stream.spec.size, pad=True) for end in ends]
        if not windows:
            return due
        frames = stream.frames.latest()
        for window in windows:
            if window is None:
                stream.lost += 1
                continue
            chosen = frames_for_update(frames, window.end_time, k, stream.max_age)
            due.append(Request(stream.id, window, tuple(chosen), stream.realtime))
        return due
    frames, total = stream.frames.snapshot()
    for count in stream.frame_windower.due(total, latest_only=stream.realtime, limit=budget):
        newest = len(frames) - 1 - (total - count)
        if newest < 0:
            stream.lost += 1
            continue
        chosen = frames_for_update(frames[: newest + 1], frames[newest].media_time, k, stream.max_age)
        due.append(Request(stream.id, None, tuple(chosen), stream.realtime))
    stream.frames_done = stream.frame_windower.done
    return due


def collect_due(streams: Sequence[StreamState], first: int, limit: int, k: int) -> list[tuple[StreamState, Request]]:
    """The updates due on all streams (due_requests), at most `limit`, starting with streams[first] so that
    fast streams share the batch budget fairly; only streams whose sources wrote something since the last
    look are looked at (StreamState.pending)."""
    due: list[tuple[StreamState, Request]] = []
    for stream in [*streams[first:], *streams[:first]]:
        if len(due) >= limit:
            break
        if not stream.pending:
            continue
        stream.pending = False  # before looking: what a source writes meanwhile sets it again
        budget = limit - len(due)
        found = due_requests(stream, budget, k)
        if len(found) == budget:
            stream.pending = True  # the budget cut it short: more may be due
        due += [(stream, r) for r in found]
    return due


def window_expected_at(stream: StreamState, sample_rate: int) -> float | None:
    """Monotonic time at which a real-time audio stream's next window is expected to be complete: its
    newest samples arrived at `last_input`, the rest arrive at the media rate. None for a stream that
    is not a running real-time audio stream (nothing to expect)."""
    if not (stream.realtime and stream.driver == "audio" and stream.running and not stream.finished):
        return None
    if stream.state != "started":  # waiting, stalled or reconnecting: no data is expected on schedule
        return None
    missing = stream.windower.next_end - stream.audio.total_written
    return stream.last_input + max(missing, 0) / sample_rate


def fill_batch(
    due: list[tuple[StreamState, T]],
    collect: Callable[[int], list[tuple[StreamState, T]]],
    streams: Sequence[StreamState],
    sample_rate: int,
    max_batch: int,
    batch_wait: float,
    wake: threading.Event,
    stop: threading.Event,
) -> list[tuple[StreamState, T]]:
    """`due` grown by what collect(budget) finds while waiting at most batch_wait seconds, and only while a
    stream not yet in the batch is expected to complete a window before the deadline (see the module
    docstring). A stream whose window is overdue by more than batch_wait (stalled, before the runtime
    says so) is not waited for. wake is set by the sources on new data."""
    start = time.monotonic()
    deadline = start + batch_wait
    while len(due) < max_batch and not stop.is_set():
        present = {id(s) for s, _ in due}
        expected = [
            t
            for s in streams
            if id(s) not in present
            and (t := window_expected_at(s, sample_rate)) is not None
            and start - batch_wait <= t <= deadline
        ]
        now = time.monotonic()
        if not expected or now >= deadline:
            break
        wake.clear()
        # Until new data arrives, or the first expected window should be complete, or the deadline.
        wake.wait(max(0.0, min(deadline, max(min(expected), now + 1e-3)) - now))
        due += collect(max_batch - len(due))
    return due
