"""The terminal live view (rich): per stream, class bars, active labels, the last 30 s as a timeline,
update and frame rates, latency and the source's state. A sink fed with the runtime's events."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamrec.core.redact import redact

TIMELINE_SECONDS = 30.0  # media seconds shown by the timeline
TIMELINE_CELLS = 60  # 0.5 s per cell
BARS = 6  # classes shown as bars, highest first
BAR_WIDTH = 30  # characters of a full bar
RATE_WINDOW = 5.0  # seconds of wall time over which rates are measured
STATE_STYLES = {"started": "green", "stalled": "yellow", "reconnecting": "yellow", "ended": "dim", "error": "red"}


@dataclass
class _StreamView:
    source: str
    state: str = "waiting"
    detail: str = ""
    t: float = 0.0
    labels: list[dict[str, Any]] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    history: deque[tuple[float, frozenset[str]]] = field(default_factory=deque)  # (media time, active)
    updates: deque[float] = field(default_factory=deque)  # wall times of recent predictions
    frames: deque[float] = field(default_factory=deque)  # wall times of recent frames
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=50))


def _rate(times: deque[float], now: float) -> float:
    while times and times[0] < now - RATE_WINDOW:
        times.popleft()
    return len(times) / RATE_WINDOW


class TerminalView:
    """send(event) from any thread; start()/close() run the rich Live display."""

    def __init__(self, streams: list[tuple[str, str]], console: Console | None = None) -> None:
        # Sources shown redacted, as in events: a URL's credentials never reach the screen.
        self._streams = {stream_id: _StreamView(redact(source)) for stream_id, source in streams}
        self._lock = threading.Lock()
        self._console = console or Console()
        self._live: Live | None = None

    def start(self) -> None:
        self._live = Live(self, console=self._console, refresh_per_second=4, transient=False)
        self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def send(self, event: dict[str, Any]) -> None:
        with self._lock:
            view = self._streams.setdefault(event["stream"], _StreamView(source="?"))
            if event["type"] == "status":
                view.state, view.detail = event["state"], event.get("detail", "")
            elif event["type"] == "prediction":
                view.t, view.labels, view.active = event["t"], event["labels"], event["active"]
                view.history.append((event["t"], frozenset(event["active"])))
                while view.history and view.history[0][0] < event["t"] - TIMELINE_SECONDS:
                    view.history.popleft()
                view.updates.append(event["wall"])
                view.latencies.append(event["latency_ms"])

    def note_frame(self, stream: str, wall: float) -> None:
        """A video frame reached the stream (for its frame rate)."""
        with self._lock:
            view = self._streams.get(stream)
            if view is not None:
                view.frames.append(wall)

    def __rich__(self) -> RenderableType:
        with self._lock:
            now = time.time()
            return Group(*(self._panel(stream_id, view, now) for stream_id, view in self._streams.items()))

    def _panel(self, stream_id: str, view: _StreamView, now: float) -> Panel:
        latencies = sorted(view.latencies)
        latency = f"{latencies[len(latencies) // 2]:.0f} ms" if latencies else "-"
        header = Text.assemble(
            (f"{view.state}", STATE_STYLES.get(view.state, "")),
            f" {view.detail}  " if view.detail else "  ",
            f"t {view.t:.1f} s  {_rate(view.updates, now):.1f} upd/s  {_rate(view.frames, now):.1f} fps  "
            f"latency {latency}",
        )
        bars = Table.grid(padding=(0, 1))
        for label in view.labels[:BARS]:
            on = label["name"] in view.active
            width = round(label["score"] * BAR_WIDTH)
            bars.add_row(
                Text(label["name"], style="bold green" if on else ""),
                Text("█" * width + "·" * (BAR_WIDTH - width), style="green" if on else "blue"),
                f"{label['score']:.2f}",
            )
        active = Text("active: ") + (Text(", ".join(view.active), style="bold green") if view.active else Text("-"))
        return Panel(
            Group(header, bars, active, self._timeline(view)),
            title=Text.assemble((stream_id, "bold"), "  ", view.source),  # Text: a path's brackets are no markup
            title_align="left",
        )

    def _timeline(self, view: _StreamView) -> RenderableType:
        """One row per class active in the last 30 s: a mark per 0.5 s cell in which it was on."""
        names = sorted({name for _, active in view.history for name in active})
        grid = Table.grid(padding=(0, 1))
        start = view.t - TIMELINE_SECONDS
        cell = TIMELINE_SECONDS / TIMELINE_CELLS
        for name in names:
            cells = ["·"] * TIMELINE_CELLS
            for t, active in view.history:
                if name in active:
                    cells[min(TIMELINE_CELLS - 1, max(0, int((t - start) / cell) - 1))] = "█"
            grid.add_row(Text(name, style="dim"), Text("".join(cells), style="green"))
        if not names:
            grid.add_row(Text(f"last {TIMELINE_SECONDS:.0f} s: nothing active", style="dim"))
        else:
            axis = f"-{TIMELINE_SECONDS:.0f} s"
            grid.add_row("", Text(axis + "now".rjust(TIMELINE_CELLS - len(axis)), style="dim"))
        return grid
