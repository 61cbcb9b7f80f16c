"""Cross-stream batching in the live runtime (runtime/batching.py): batched updates equal each stream run
alone, and a batch never waits for a stream that will not fill it (one stream alone, a stream that ended
or stalled)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamrec.core.bundle import Bundle
from streamrec.core.networks import NetworkInfo
from streamrec.runtime.pipeline import CustomSource, RunSummary, Runtime, RuntimeOptions
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import CaptureFormat, Emit, Source
from streamrec.runtime.sources.file import FileSource
from streamrec.runtime.types import AudioChunk, SourceInfo, StateChange

from .helpers import CLASSES

pytestmark = pytest.mark.timeout(180)  # threads: never hang CI

CHUNK_SECONDS = 0.05


class Delayed:
    """Another source started `seconds` later: streams that begin at different times."""

    def __init__(self, source: Source, seconds: float) -> None:
        self.source, self.seconds, self.description = source, seconds, source.description

    def prepare(self) -> None:
        self.source.prepare()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        if not stop.wait(self.seconds):
            self.source.run(emit, stop)


class Tone:
    """A real-time audio-only input: `seconds` of a sine in 50 ms chunks paced by the wall clock. With
    stall_at, it goes quiet after that much media for `stall` seconds, then ends (a stalled stream)."""

    def __init__(self, rate: int, seconds: float, stall_at: float | None = None, stall: float = 0.0) -> None:
        self.rate, self.seconds, self.stall_at, self.stall = rate, seconds, stall_at, stall
        self.description = "tone"

    def prepare(self) -> None:
        pass

    def run(self, emit: Emit, stop: threading.Event) -> None:
        emit(SourceInfo(audio=True, video=False))
        emit(StateChange("started", "tone"))
        n = round(CHUNK_SECONDS * self.rate)
        start = time.monotonic()
        for i in range(round(self.seconds / CHUNK_SECONDS)):
            media = i * CHUNK_SECONDS
            if self.stall_at is not None and media >= self.stall_at:
                stop.wait(self.stall)
                break
            if stop.wait(max(0.0, start + media + CHUNK_SECONDS - time.monotonic())):
                return
            t = media + np.arange(n) / self.rate
            emit(AudioChunk((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), self.rate, media, time.time()))
        emit(StateChange("ended", "done"))


def run(sources: list[CustomSource], **options) -> tuple[RunSummary, list[dict]]:
    events: list[dict] = []
    summary = Runtime(sources, RuntimeOptions(**options), sinks=[CallbackSink(events.append)]).run()
    return summary, events


def predictions(events: list[dict], stream: str) -> list[dict]:
    return [e for e in events if e["stream"] == stream and e["type"] == "prediction"]


def scores(event: dict) -> np.ndarray:
    video = event["modalities"]["video"]
    fused = {label["name"]: label["score"] for label in event["labels"]}
    rows = [fused, event["modalities"]["audio"] or dict.fromkeys(CLASSES, 0.0), video or dict.fromkeys(CLASSES, 0.0)]
    return np.array([[row[c] for c in CLASSES] for row in rows])


def test_batched_streams_equal_each_stream_run_alone(runtime_bundle: Path, runtime_clips: Path) -> None:
    info = NetworkInfo.from_bundle(Bundle.load(runtime_bundle))
    fmt = CaptureFormat(info.sample_rate, info.frames)
    # Different lengths (3 s and 6 s), start times (0, 0.3 s, 0.6 s) and modalities (audio + video, audio only).
    clips = {"av": ("av.mp4", 0.0), "long": ("long.mp4", 0.3), "tone": ("tone.wav", 0.6), "av2": ("av.mp4", 0.0)}

    def sources(names: list[str]) -> list[CustomSource]:
        return [
            CustomSource(name, Delayed(FileSource(runtime_clips / clips[name][0], fmt), clips[name][1]), False)
            for name in names
        ]

    together, events = run(sources(list(clips)), bundle=runtime_bundle, max_batch=16)
    assert together.batches["updates"]["max"] > 1, together.batches  # several streams in one network call
    for name in clips:
        alone, alone_events = run(sources([name]), bundle=runtime_bundle, max_batch=1)
        assert alone.batches["updates"]["max"] == 1
        got, expected = predictions(events, name), predictions(alone_events, name)
        assert [e["t"] for e in got] == [e["t"] for e in expected] and len(got) == together.streams[name].updates
        for g, e in zip(got, expected):
            np.testing.assert_allclose(scores(g), scores(e), atol=2e-4)


def test_one_stream_alone_never_waits_for_a_batch(runtime_bundle: Path) -> None:
    rate = NetworkInfo.from_bundle(Bundle.load(runtime_bundle)).sample_rate
    # A long allowed wait: if a lone stream waited for a batch to fill, every update would be 0.4 s late.
    summary, events = run([CustomSource("one", Tone(rate, 3.0))], bundle=runtime_bundle, batch_wait=0.4)
    latencies = [e["latency_ms"] for e in predictions(events, "one")]
    assert len(latencies) == 5 and summary.streams["one"].skipped == 0
    assert max(latencies) < 200, latencies


def test_a_stream_ending_or_stalling_does_not_delay_the_others(runtime_bundle: Path) -> None:
    rate = NetworkInfo.from_bundle(Bundle.load(runtime_bundle)).sample_rate
    sources = [
        CustomSource("steady", Tone(rate, 4.0)),
        CustomSource("ends", Tone(rate, 1.6)),  # its source ends after 1.6 s
        CustomSource("stalls", Tone(rate, 4.0, stall_at=1.6, stall=2.5)),  # no data after 1.6 s, then ends
    ]
    summary, events = run(sources, bundle=runtime_bundle, batch_wait=0.4, stall_seconds=2.0)
    # While the three run in step, their windows share network calls.
    assert summary.batches["updates"]["max"] >= 2, summary.batches
    steady = predictions(events, "steady")
    assert [e["t"] for e in steady] == [1.0 + 0.5 * i for i in range(7)] and summary.streams["steady"].skipped == 0
    # Once the others ended or stalled, nothing waits for them: a wait would add up to 0.4 s.
    late = [e["latency_ms"] for e in steady if e["t"] >= 2.5]
    assert max(late) < 200, late
    assert [e["t"] for e in predictions(events, "ends")] == [1.0, 1.5]
    assert [e["t"] for e in predictions(events, "stalls")] == [1.0, 1.5]
