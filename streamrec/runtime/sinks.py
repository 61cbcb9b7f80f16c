"""Where events go besides the websocket: a JSON-lines file, or a Python callable.

A sink receives every hello-less event (prediction and status dicts of docs/events.md) from the
runtime's threads, one call at a time (the runtime serialises calls), and must return quickly.
A sink that may block (a file, a pipe read by a slow consumer) runs behind a `QueuedSink`: its own
bounded queue and thread, so a stalled reader never holds up inference or the websocket clients.
A sink that fails, or falls a whole queue behind, fails the run (SinkError): its output would be
incomplete, and an incomplete file must not look like a successful run.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from streamrec.core.errors import UserError

log = logging.getLogger(__name__)

SINK_QUEUE_EVENTS = 4096  # events a queued sink may fall behind (about 34 min of one stream at a 0.5 s hop)
SINK_CLOSE_SECONDS = 5.0  # how long closing waits for a queued sink to write what it holds


class Sink(Protocol):
    def send(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class SinkError(UserError):
    """A sink could not take every event (a write failed, or its reader fell a whole queue behind)."""


class JsonlSink:
    """One JSON object per line, written straight to the file (no buffer), so a reader (tail -f) or a
    crash loses nothing. A failed write raises SinkError."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: every line reaches the file at once, and a write blocked on a stalled pipe holds
            # no buffer lock that would abort the interpreter's shutdown.
            self._file = self.path.open("wb", buffering=0)
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from e
        self.lines = 0

    def send(self, event: dict[str, Any]) -> None:
        if self._file.closed:
            return
        data = memoryview((json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8"))
        try:
            while data:  # a pipe may take part of a line
                data = data[self._file.write(data) or 0 :]
        except OSError as e:
            raise SinkError(f"writing {self.path} failed: {e.strerror or e}") from e
        self.lines += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            log.info("wrote %d events to %s", self.lines, self.path)

    def __str__(self) -> str:
        return f"writing {self.path}"


_CLOSE = object()  # the queue's last item


class QueuedSink:
    """Runs `sink` on its own thread behind a bounded queue: send() never blocks.

    When the queue is full the sink has fallen `maxsize` events behind: rather than drop events from a
    file silently, or make inference wait, the sink fails (on_failure is called with a SinkError, and
    the sink takes no more). A failing sink.send fails it the same way. close() writes what is queued,
    waiting at most close_seconds; events still unwritten then fail the sink too.
    """

    def __init__(
        self,
        sink: Sink,
        on_failure: Callable[[SinkError], None] = lambda e: None,
        maxsize: int = SINK_QUEUE_EVENTS,
        close_seconds: float = SINK_CLOSE_SECONDS,
    ) -> None:
        self.sink = sink
        self.on_failure = on_failure
        self.maxsize = maxsize
        self.close_seconds = close_seconds
        self.failure: SinkError | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._drain, name=f"sink-{type(sink).__name__}", daemon=True)
        self._thread.start()

    def send(self, event: dict[str, Any]) -> None:
        if self.failure is not None:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._fail(
                SinkError(f"{self.sink}: its reader fell {self.maxsize} events behind; stopping, not losing them")
            )

    def close(self) -> None:
        deadline = time.monotonic() + (self.close_seconds if self.failure is None else 0.1)
        try:
            self._queue.put(_CLOSE, timeout=self.close_seconds if self.failure is None else 0.1)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():  # blocked in a write: closing the file under it would not unblock it
            left = self._queue.qsize()
            self._fail(SinkError(f"{self.sink}: {left} events not written within {self.close_seconds:g} s"))
            return
        self.sink.close()

    def _drain(self) -> None:
        while (event := self._queue.get()) is not _CLOSE:
            try:
                self.sink.send(event)
            except Exception as e:
                self._fail(e if isinstance(e, SinkError) else SinkError(f"{self.sink} failed: {type(e).__name__}: {e}"))
                return

    def _fail(self, error: SinkError) -> None:
        if self.failure is None:
            self.failure = error
            log.debug("sink failed: %s", error)
            self.on_failure(error)


class CallbackSink:
    """Calls `callback(event)` for every event (for using the runtime from Python)."""

    def __init__(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self.callback = callback

    def send(self, event: dict[str, Any]) -> None:
        self.callback(event)

    def close(self) -> None:
        pass
