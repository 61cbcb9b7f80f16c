"""A camera (or any input OpenCV opens: a file, a URL) as a stream of frames at a low fixed rate.

A device is read continuously, so that the frame kept every 1/fps seconds is the current one and
not one that waited in the driver's queue; only the kept frames are preprocessed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2

from streamrec.core.features import preprocess_frame
from streamrec.core.media import FrameSampler
from streamrec.runtime.sources.base import CaptureFormat, Emit, Pacer, SourceError
from streamrec.runtime.types import Frame, SourceInfo, StateChange

log = logging.getLogger(__name__)


def _quiet_opencv() -> None:
    """OpenCV's own log lines off (process-wide), unless debugging: a camera that cannot be opened or
    read is reported as one line by this source, and OpenCV's WARN/ERROR lines before it say the same
    in its own format (and print to stderr around the terminal view)."""
    debug = log.isEnabledFor(logging.DEBUG)
    levels = cv2.utils.logging
    levels.setLogLevel(levels.LOG_LEVEL_INFO if debug else levels.LOG_LEVEL_SILENT)


class CameraSource:
    """device: a camera index (0 = the first camera) or a path OpenCV can open (then paced like a file
    when realtime). fps: frames kept per second (default: the bundle's frame rate)."""

    def __init__(
        self,
        device: int | str,
        fmt: CaptureFormat,
        fps: float | None = None,
        realtime: bool = True,
        duration: float | None = None,
    ) -> None:
        fps = fps if fps is not None else fmt.frames.fps
        if fps <= 0:
            raise ValueError(f"the camera frame rate must be positive, got {fps}")
        if duration is not None and duration <= 0:
            raise ValueError(f"duration must be positive seconds, got {duration}")
        self.device = device
        self.is_file = isinstance(device, str) and not device.isdigit()
        self.description = f"camera {device}" if not self.is_file else str(device)
        self.fmt = fmt
        self.fps = fps
        self.duration = duration
        self._pacer = Pacer(realtime and self.is_file)
        self._capture: cv2.VideoCapture | None = None

    def prepare(self) -> None:
        if self.is_file and not Path(str(self.device)).is_file():
            raise SourceError(f"no such video file: {self.device}")
        _quiet_opencv()
        index = int(self.device) if not self.is_file else None
        capture = cv2.VideoCapture(index if index is not None else str(self.device))
        if not capture.isOpened():
            capture.release()
            raise SourceError(
                f"cannot open camera {self.device}: no such device, or it is busy (try another --camera index)"
                if index is not None
                else f"OpenCV cannot open {self.device}"
            )
        self._capture = capture

    def run(self, emit: Emit, stop: threading.Event) -> None:
        try:
            if self._capture is None:
                self.prepare()
            self._run(emit, stop)
        except SourceError as e:
            emit(StateChange("error", str(e)))
        except Exception as e:  # a source never takes the runtime down
            log.exception("camera %s failed", self.device)
            emit(StateChange("error", f"{type(e).__name__}: {e}"))
        finally:
            if self._capture is not None:
                self._capture.release()
                self._capture = None

    def _run(self, emit: Emit, stop: threading.Event) -> None:
        capture = self._capture
        if capture is None:
            raise SourceError(f"camera {self.device} is not open")
        sampler = FrameSampler(self.fps)
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        emit(SourceInfo(audio=False, video=True))
        emit(StateChange("started", f"{self.description}: {width}x{height}, keeping {self.fps:g} frame/s"))
        start = time.monotonic()
        while not stop.is_set():
            ok, bgr = capture.read()
            if not ok:
                if self.is_file:
                    emit(StateChange("ended", "end of media"))
                else:
                    emit(StateChange("error", f"camera {self.device} stopped delivering frames"))
                return
            # A file has its own clock; a device's media time is the time since capture began.
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if self.is_file else time.monotonic() - start
            if self.duration is not None and t >= self.duration:
                emit(StateChange("ended", f"reached the duration of {self.duration:g} s"))
                return
            if not sampler.take(t):
                continue
            self._pacer.wait(t, stop)
            image = preprocess_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.fmt.frames)
            emit(Frame(image, t, time.time()))
