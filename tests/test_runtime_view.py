"""The terminal view and the JSON-lines sink, fed with contract events."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from streamrec.core.errors import UserError
from streamrec.runtime.sinks import JsonlSink
from streamrec.runtime.types import Recognition, hello_event, prediction_event, status_event
from streamrec.runtime.view import TerminalView

CLASSES = ("drums", "piano", "violin")


def prediction(t: float, active: list[str], seq: int = 0) -> dict:
    recognition = Recognition(np.array([0.1, 0.2, 0.7]), np.array([0.2, 0.2, 0.6]), None, 0.05, -20.0)
    return prediction_event("cam0", seq, t, time.time(), CLASSES, recognition, active, 12.3)


def test_events_follow_the_contract() -> None:
    event = prediction(12.5, ["violin"], seq=17)
    assert [label["name"] for label in event["labels"]] == ["violin", "piano", "drums"]
    assert event["modalities"] == {"audio": {"drums": 0.2, "piano": 0.2, "violin": 0.6}, "video": None}
    assert (event["type"], event["stream"], event["seq"], event["t"], event["active"]) == (
        "prediction",
        "cam0",
        17,
        12.5,
        ["violin"],
    )
    assert hello_event(CLASSES, [("cam0", "camera 0")]) == {
        "type": "hello", "version": 1, "classes": list(CLASSES), "streams": [{"id": "cam0", "source": "camera 0"}],
    }  # fmt: skip
    assert status_event("cam0", "stalled", "no data") == {
        "type": "status",
        "stream": "cam0",
        "state": "stalled",
        "detail": "no data",
    }
    with pytest.raises(ValueError, match="state"):
        status_event("cam0", "sleeping")


def test_view_shows_bars_active_labels_timeline_rates_and_state() -> None:
    view = TerminalView([("cam0", "camera 0")])
    view.send(status_event("cam0", "started", "640x480"))
    for i in range(8):
        view.send(prediction(i * 0.5, ["violin"] if i >= 2 else [], seq=i))
        view.note_frame("cam0", time.time())
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(view)
    text = out.getvalue()
    for expected in (
        "cam0",
        "camera 0",
        "started",
        "violin",
        "0.70",
        "active: violin",
        "upd/s",
        "fps",
        "latency 12 ms",
        "█",
    ):
        assert expected in text, expected
    view.send(status_event("cam0", "reconnecting", "retrying in 1.0 s"))
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(view)
    assert "reconnecting" in out.getvalue()


def test_jsonl_sink_flushes_every_line(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "deep" / "events.jsonl")
    sink.send(status_event("a", "started"))
    assert json.loads((tmp_path / "deep" / "events.jsonl").read_text()) == status_event("a", "started")  # before close
    sink.close()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write"):
        JsonlSink(blocker / "events.jsonl")
