"""A microphone through sounddevice (PortAudio): mono audio at the model rate, stamped at capture.

PortAudio calls back from its own thread with each block; the callback only copies the block and
its capture time into a queue (it must return quickly or the device overruns), and `run` resamples
and hands the chunks on. The device is opened at the model rate when it supports it (PulseAudio
does), else at its own rate and resampled. sounddevice starts PortAudio when imported, so it is
imported only when a microphone is used.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from streamrec.core.media import StreamingResampler
from streamrec.runtime.sources.base import CaptureFormat, Emit, SourceError
from streamrec.runtime.types import AudioChunk, SourceInfo, StateChange

# sounddevice is imported when a microphone opens: it needs the system's PortAudio.

log = logging.getLogger(__name__)

BLOCK_SECONDS = 0.05  # seconds per PortAudio block: 20 callbacks a second
QUEUE_BLOCKS = 200  # blocks (10 s) buffered between the callback and `run` before the oldest are lost


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as e:  # the Python package is there but the PortAudio library is not
        raise SourceError(f"cannot use a microphone: {e} (install the system's PortAudio, e.g. libportaudio2)") from e
    return sounddevice


class MicrophoneSource:
    """device: a sounddevice input device index or (part of) its name; None = the system default."""

    def __init__(self, device: int | str | None, fmt: CaptureFormat, duration: float | None = None) -> None:
        if duration is not None and duration <= 0:
            raise ValueError(f"duration must be positive seconds, got {duration}")
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.fmt = fmt
        self.duration = duration
        self.description = f"microphone {device if device is not None else 'default'}"
        self.rate: int | None = None  # the device's rate once prepared
        self.overflows = 0  # blocks PortAudio reported as overrun, or the queue dropped

    def prepare(self) -> None:
        sd = _sounddevice()
        try:
            info = sd.query_devices(self.device, kind="input")
        except (ValueError, sd.PortAudioError) as e:
            inputs = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
            available = ", ".join(repr(n) for n in inputs) if inputs else "none"
            raise SourceError(
                f"no microphone {self.device if self.device is not None else '(default)'}: {e}; "
                f"input devices available: {available}"
            ) from e
        try:
            sd.check_input_settings(self.device, channels=1, dtype="float32", samplerate=self.fmt.sample_rate)
            self.rate = self.fmt.sample_rate
        except (ValueError, sd.PortAudioError):
            self.rate = int(info["default_samplerate"])
        self.description = f"microphone {info['name']}"

    def run(self, emit: Emit, stop: threading.Event) -> None:
        try:
            if self.rate is None:
                self.prepare()
            self._run(emit, stop)
        except SourceError as e:
            emit(StateChange("error", str(e)))
        except Exception as e:  # a source never takes the runtime down
            log.exception("microphone %s failed", self.device)
            emit(StateChange("error", f"{type(e).__name__}: {e}"))

    def _run(self, emit: Emit, stop: threading.Event) -> None:
        sd = _sounddevice()
        rate = self.rate or self.fmt.sample_rate
        blocks: queue.Queue[tuple[np.ndarray, float]] = queue.Queue(maxsize=QUEUE_BLOCKS)

        def callback(data: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status.input_overflow:
                self.overflows += 1
            try:
                blocks.put_nowait((data[:, 0].copy(), time.time()))
            except queue.Full:
                self.overflows += 1

        resampler = StreamingResampler(rate, self.fmt.sample_rate)
        delivered = 0  # samples at the model rate
        stream = sd.InputStream(
            device=self.device,
            channels=1,
            dtype="float32",
            samplerate=rate,
            blocksize=round(BLOCK_SECONDS * rate),
            callback=callback,
        )
        with stream:
            emit(SourceInfo(audio=True, video=False))
            emit(StateChange("started", f"{self.description} at {rate} Hz"))
            while not stop.is_set():
                try:
                    block, captured = blocks.get(timeout=0.1)
                except queue.Empty:
                    continue
                samples = resampler.push(block)
                if not len(samples):
                    continue
                emit(AudioChunk(samples, self.fmt.sample_rate, delivered / self.fmt.sample_rate, captured))
                delivered += len(samples)
                if self.duration is not None and delivered / self.fmt.sample_rate >= self.duration:
                    emit(StateChange("ended", f"reached the duration of {self.duration:g} s"))
                    return
        if self.overflows:
            log.warning("%s: %d audio blocks were lost (input overflow)", self.description, self.overflows)
