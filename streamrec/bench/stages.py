"""Per-call latency of every stage of one update at batch 1 (decode, front end, audio network, frame
network, fusion, the whole recognizer, emission), backends timed round-robin side by side: where an
update's time goes, and which backend is faster at each stage."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamrec.bench.results import StageRow
from streamrec.bench.timing import Percentiles, time_round_robin
from streamrec.core.features import preprocess_frame
from streamrec.core.media import decode_audio, decode_frames
from streamrec.core.networks import NetworkInfo, Networks
from streamrec.core.scores import fusion_inputs
from streamrec.runtime.recognizer import Recognizer, Request
from streamrec.runtime.smoothing import Smoother
from streamrec.runtime.sources import CaptureFormat
from streamrec.runtime.sources.file import decode_costs
from streamrec.runtime.types import AudioWindow, Frame, prediction_event


def stage_latencies(networks: dict[str, Networks], clip: Path, repeats: int, hop_seconds: float) -> list[StageRow]:
    """Every stage of one update at batch 1, on windows and frames of a real clip: decode (per packet),
    front end, audio network, tagger, frame network, fusion, emission (smoothing, event, JSON)."""
    info = next(iter(networks.values())).info
    rows: list[StageRow] = []
    packets = decode_costs(clip, CaptureFormat(info.sample_rate, info.frames))
    rows.append(StageRow("decode", "-", "one packet (audio or video)", Percentiles.of([c * 1e3 for _, c in packets])))

    audio = decode_audio(clip, info.sample_rate) if info.has_audio else None
    decoded = decode_frames(clip, info.frames.fps) if info.has_video else None
    images = np.stack([preprocess_frame(f, info.frames) for f in decoded[0]]) if decoded is not None else None
    window = None
    if audio is not None:  # a window from the middle of the clip, zero-padded if the clip is short
        piece = audio[max(0, len(audio) // 2 - info.window_samples) :][: info.window_samples]
        window = np.pad(piece, (0, info.window_samples - len(piece))).astype(np.float32)[None]
    image = images[:1] if images is not None else None

    def per_backend(stage: str, unit: str, make: Callable[[str, Networks], Callable[[], object]]) -> None:
        times = time_round_robin({name: make(name, n) for name, n in networks.items()}, repeats)
        rows.extend(StageRow(stage, name, unit, Percentiles.of(t)) for name, t in times.items())

    if window is not None:
        per_backend("front end", "log-mel of one window", lambda name, n: lambda: n.frontend(window))
        logmel = {name: n.frontend(window) for name, n in networks.items()}
        per_backend("audio network", "one window's log-mel", lambda name, n: lambda: n.audio_features(logmel[name]))
        per_backend("audio (front end + network)", "one window", lambda name, n: lambda: n.audio(window))
    if window is not None and info.has_tagger:  # off the emission path: the frame workers run it
        per_backend("tagger", "one window (its front end + network)", lambda name, n: lambda: n.tagger(window))
    if image is not None:
        per_backend("frame network", "one frame", lambda name, n: lambda: n.frames(image))
    if info.has_fusion:
        request = _fusion_request(info, window, images)
        fuse_inputs = {name: _fusion_inputs(n, request) for name, n in networks.items()}
        per_backend(
            "fusion",
            f"one update (1 audio + {info.k_frames} frames)",
            lambda name, n: lambda: n.fuse(*fuse_inputs[name]),
        )
    # The whole recognizer at batch 1 with frames cached, as a live update runs it after the frame thread.
    if window is not None:
        recognizers = {name: Recognizer(n) for name, n in networks.items()}
        request = _fusion_request(info, window, images)
        for r in recognizers.values():
            r([request])
        per_backend(
            "update (recognizer, frames cached)", "one update", lambda name, n: lambda: recognizers[name]([request])
        )
    # Emission: smoothing, the prediction event, its JSON text (what every sink and client receives).
    result = Recognizer(next(iter(networks.values())))([_fusion_request(info, window, images)])[0]
    smoother = Smoother(info.classes)
    clock = itertools.count()

    def emit() -> None:
        t = next(clock) * hop_seconds
        smoothed = smoother.follow(t, result)
        json.dumps(
            prediction_event("s", 0, t, time.time(), info.classes, result, smoothed.active, 1.0), separators=(",", ":")
        )

    emission = time_round_robin({"emission": emit}, repeats)["emission"]
    rows.append(StageRow("emission", "-", "smoothing + event + JSON", Percentiles.of(emission)))
    return rows


def _fusion_request(info: NetworkInfo, window: np.ndarray | None, images: np.ndarray | None) -> Request:
    audio_window = None
    if window is not None:
        audio_window = AudioWindow(window[0], 1.0, time.time(), len(window[0]))
    frames: tuple[Frame, ...] = ()
    if images is not None:
        frames = tuple(Frame(images[i % len(images)], float(i), time.time()) for i in range(info.k_frames))
    return Request("s", audio_window, frames)


def _fusion_inputs(networks: Networks, request: Request) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fusion network's inputs for one update, built as the Recognizer builds them."""
    info = networks.info
    audio = networks.audio(request.window.samples[None])[1] if request.window is not None else None
    frames = networks.frames(np.stack([f.image for f in request.frames]))[1] if request.frames else None
    return fusion_inputs(audio, frames, info.k_frames, info.audio_dim or 1, info.video_dim or 1)
