"""Where events go besides the websocket: a JSON-lines file, or a Python callable.

A sink receives every hello-less event (prediction and status dicts of docs/events.md) from the
runtime's threads, one call at a time (the runtime serialises calls), and must return quickly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from streamrec.core.errors import UserError

log = logging.getLogger(__name__)


class Sink(Protocol):
    def send(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per line, flushed after each, so a reader (tail -f) or a crash loses nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from e
        self.lines = 0

    def send(self, event: dict[str, Any]) -> None:
        if self._file.closed:
            return
        self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            log.info("wrote %d events to %s", self.lines, self.path)


class CallbackSink:
    """Calls `callback(event)` for every event (for using the runtime from Python)."""

    def __init__(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self.callback = callback

    def send(self, event: dict[str, Any]) -> None:
        self.callback(event)

    def close(self) -> None:
        pass
