"""Sources of the live runtime: files and URLs (PyAV), cameras (OpenCV), microphones (sounddevice).

A SourceSpec names one input; inputs sharing a stream id feed one stream (a camera and a
microphone for `streamrec live`); every other input is its own stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from streamrec.runtime.sources.base import CaptureFormat, Emit, Pacer, ReconnectPolicy, Source, SourceError
from streamrec.runtime.sources.camera import CameraSource
from streamrec.runtime.sources.file import FileSource, is_url
from streamrec.runtime.sources.microphone import MicrophoneSource

KINDS = ("file", "url", "camera", "microphone")
_STREAM_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

__all__ = [
    "KINDS",
    "CaptureFormat",
    "Emit",
    "Pacer",
    "ReconnectPolicy",
    "Source",
    "SourceError",
    "SourceSpec",
    "assign_stream_ids",
    "live_sources",
    "open_source",
    "parse_source",
]


@dataclass(frozen=True)
class SourceSpec:
    """One input. kind: file, url, camera (target: index or path) or microphone (target: device
    index or name, "" = default). stream_id: None = derived from the target."""

    kind: str
    target: str
    stream_id: str | None = None
    realtime: bool | None = None  # None: real time for URLs and devices, as fast as possible for files
    fps: float | None = None  # camera frames kept per second (None: the bundle's rate)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.stream_id is not None and not _STREAM_ID.match(self.stream_id):
            raise ValueError(f"stream id {self.stream_id!r} must be 1-64 letters, digits or _.:-")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"the frame rate must be positive, got {self.fps}")

    @property
    def is_realtime(self) -> bool:
        return self.realtime if self.realtime is not None else self.kind != "file"


def parse_source(
    text: str, stream_id: str | None = None, realtime: bool | None = None, must_exist: bool = True
) -> SourceSpec:
    """A SOURCE argument of `streamrec run`: a file path, a URL (rtsp://, http(s)://, ...), camera:N,
    or mic: / mic:DEVICE. Raises SourceError for a file that does not exist (unless must_exist is False:
    a streams file names files that only the host running them has)."""
    lower = text.lower()
    if is_url(text):
        return SourceSpec("url", text, stream_id, realtime)
    for prefix, kind in (
        ("camera:", "camera"),
        ("cam:", "camera"),
        ("mic:", "microphone"),
        ("microphone:", "microphone"),
    ):
        if lower.startswith(prefix):
            target = text[len(prefix) :]
            if kind == "camera" and not target:
                target = "0"
            return SourceSpec(kind, target, stream_id, realtime)
    if lower in ("mic", "microphone"):
        return SourceSpec("microphone", "", stream_id, realtime)
    if must_exist and not Path(text).is_file():
        raise SourceError(f"no such media file: {text} (a SOURCE is a file, a URL, camera:N or mic:[DEVICE])")
    return SourceSpec("file", text, stream_id, realtime)


def live_sources(
    camera: int | str | None = 0, microphone: str | None = "", fps: float | None = None, stream_id: str | None = None
) -> list[SourceSpec]:
    """`streamrec live`: a camera and a microphone as ONE stream (video and audio fused together).

    camera: index or path (None = no camera); microphone: device index or name, "" = the default
    input (None = no microphone); fps: camera frames kept per second (None: the bundle's rate);
    stream_id: default cam0 (mic0 without a camera)."""
    if camera is None and microphone is None:
        raise ValueError("live needs a camera, a microphone, or both")
    stream_id = stream_id or ("cam0" if camera is not None else "mic0")
    specs = []
    if camera is not None:
        specs.append(SourceSpec("camera", str(camera), stream_id, True, fps))
    if microphone is not None:
        specs.append(SourceSpec("microphone", microphone, stream_id, True))
    return specs


def _default_id(spec: SourceSpec, index: int) -> str:
    if spec.kind == "file":
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(spec.target).stem)[:48]
        return stem or f"file{index}"
    return {"url": "url", "camera": "cam", "microphone": "mic"}[spec.kind] + str(index)


def assign_stream_ids(specs: list[SourceSpec]) -> list[str]:
    """A stream id per spec: its own, or one derived from the target (made unique: clip, clip-2, ...)."""
    counts: dict[str, int] = {}
    ids = []
    explicit = {s.stream_id for s in specs if s.stream_id is not None}
    for spec in specs:
        if spec.stream_id is not None:
            ids.append(spec.stream_id)
            continue
        kind_index = counts.get(spec.kind, 0)
        counts[spec.kind] = kind_index + 1
        base = _default_id(spec, kind_index)
        candidate, n = base, 2
        while candidate in ids or candidate in explicit:
            candidate, n = f"{base}-{n}", n + 1
        ids.append(candidate)
    return ids


def open_source(spec: SourceSpec, fmt: CaptureFormat, duration: float | None = None) -> Source:
    """The Source object for a spec (not started; call prepare() then run())."""
    if spec.kind in ("file", "url"):
        return FileSource(spec.target, fmt, realtime=spec.is_realtime, duration=duration)
    if spec.kind == "camera":
        return CameraSource(spec.target, fmt, fps=spec.fps, realtime=spec.is_realtime, duration=duration)

    return MicrophoneSource(spec.target or None, fmt, duration=duration)
