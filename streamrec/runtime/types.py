"""What flows through the live runtime, each item stamped with its media time and its capture time.

    source -> AudioChunk / Frame / SourceInfo / StateChange -> ring buffers -> windows
           -> Recognition -> smoothing -> Prediction / status events -> sinks

Media time is seconds on the stream's own clock (0 = its first sample or frame); capture time is
the unix time (`time.time()`) at which the data became available at the source, so latency is
measurable end to end. The event builders at the bottom write the JSON objects of docs/events.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamrec.core.redact import redact

EVENT_VERSION = 1  # the "version" of the hello event (docs/events.md)
STATES = ("started", "stalled", "reconnecting", "ended", "error")
TERMINAL_STATES = ("ended", "error")
SCORE_DECIMALS = 4  # scores in events are rounded: 1e-4 is far below what a model can tell apart


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view, so that a frozen item cannot be changed through its array either."""
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class AudioChunk:
    """Consecutive mono samples at the model's rate.

    samples: (n,) float32 in [-1, 1]; media_time: seconds, of the first sample; capture_time: unix
    seconds at which the newest sample of the chunk became available.
    """

    samples: np.ndarray
    sample_rate: int
    media_time: float
    capture_time: float

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.dtype != np.float32:
            raise ValueError(
                f"an audio chunk holds mono float32 samples, got shape {self.samples.shape} of {self.samples.dtype}"
            )
        if self.sample_rate <= 0:
            raise ValueError(f"the sample rate must be positive, got {self.sample_rate}")
        object.__setattr__(self, "samples", _read_only(self.samples))

    @property
    def end_time(self) -> float:
        """Media time just after the last sample, in seconds."""
        return self.media_time + len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Frame:
    """One preprocessed video frame: image (size, size, 3) uint8 RGB, already resized and centre-cropped."""

    image: np.ndarray
    media_time: float
    capture_time: float

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"a frame is (size, size, 3) uint8 RGB, got shape {self.image.shape} of {self.image.dtype}"
            )
        object.__setattr__(self, "image", _read_only(self.image))

    @property
    def key(self) -> tuple[float, float]:
        """Identity of the frame within a stream (media time alone repeats after a reconnection)."""
        return (self.media_time, self.capture_time)


@dataclass(frozen=True)
class SourceInfo:
    """Which modalities a source delivers; sent once it has opened its input."""

    audio: bool
    video: bool


@dataclass(frozen=True)
class StateChange:
    """A source's state (one of STATES) with a one-line detail for people."""

    state: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown stream state {self.state!r}; known: {', '.join(STATES)}")


# What a source hands to the runtime.
SourceItem = AudioChunk | Frame | SourceInfo | StateChange


@dataclass(frozen=True)
class AudioWindow:
    """One model input: samples (window,) float32 ending at end_time (media seconds, just after the
    newest sample); capture_time of the newest sample; end_index counts samples since the stream began."""

    samples: np.ndarray
    end_time: float
    capture_time: float
    end_index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", _read_only(self.samples))


@dataclass(frozen=True)
class Recognition:
    """What the networks say about one update of one stream.

    fused: (classes,) probabilities of the fusion network over the taxonomy; audio: (classes,) audio
    network probabilities over the taxonomy (background column removed), None without audio;
    video: (classes,) mean frame probabilities over the frames used, None without frames;
    background: the audio network's "no instrument" probability (None without audio or without a
    background output); energy_db: RMS level of the audio window in dBFS (None without audio);
    frame_time: media time of the newest frame behind `video` (None without frames).
    """

    fused: np.ndarray
    audio: np.ndarray | None
    video: np.ndarray | None
    background: float | None
    energy_db: float | None
    frame_time: float | None = None


def _scores(classes: Sequence[str], values: np.ndarray) -> dict[str, float]:
    return {name: round(float(v), SCORE_DECIMALS) for name, v in zip(classes, values)}


def hello_event(classes: Sequence[str], streams: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The first message to every websocket client; streams are (id, source description) pairs, their
    descriptions redacted (a URL's credentials never reach a client)."""
    return {
        "type": "hello",
        "version": EVENT_VERSION,
        "classes": list(classes),
        "streams": [{"id": stream_id, "source": redact(source)} for stream_id, source in streams],
    }


def prediction_event(
    stream: str,
    seq: int,
    t: float,
    wall: float,
    classes: Sequence[str],
    recognition: Recognition,
    active: Sequence[str],
    latency_ms: float,
    explain: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A fused update: labels sorted by score (all classes), the active set, per-modality scores; with
    `--explain`, also `explain`: Grad-CAM of the newest frame for the top class (explain.LiveExplainer)."""
    order = np.argsort(-recognition.fused, kind="stable")
    modalities: Mapping[str, dict[str, float] | None] = {
        "audio": _scores(classes, recognition.audio) if recognition.audio is not None else None,
        "video": _scores(classes, recognition.video) if recognition.video is not None else None,
    }
    event = {
        "type": "prediction",
        "stream": stream,
        "seq": seq,
        "t": round(t, 3),
        "wall": round(wall, 3),
        "labels": [{"name": classes[i], "score": round(float(recognition.fused[i]), SCORE_DECIMALS)} for i in order],
        "active": list(active),
        "modalities": dict(modalities),
        "latency_ms": round(latency_ms, 1),
    }
    if explain is not None:
        event["explain"] = explain
    return event


def status_event(stream: str, state: str, detail: str = "") -> dict[str, Any]:
    """A stream's state; the detail is redacted (FFmpeg's error texts repeat a source URL, credentials too)."""
    if state not in STATES:
        raise ValueError(f"unknown stream state {state!r}; known: {', '.join(STATES)}")
    return {"type": "status", "stream": stream, "state": state, "detail": redact(detail)}
