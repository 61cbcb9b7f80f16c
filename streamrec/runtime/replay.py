"""A media file through the runtime as fast as it decodes, its prediction events collected: what a live
view would have shown, for scoring against a timeline (streamrec.train.timeline) or for inspection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamrec.core.networks import Networks
from streamrec.runtime.options import RuntimeOptions
from streamrec.runtime.pipeline import Runtime
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import SourceSpec


def replay(clip: Path, options: RuntimeOptions, networks: Networks | None = None) -> list[dict[str, Any]]:
    """The prediction events of one file run as one stream (every window evaluated, no pacing)."""
    events: list[dict[str, Any]] = []
    runtime = Runtime(
        [SourceSpec("file", str(clip), "replay", realtime=False)],
        options,
        sinks=[CallbackSink(lambda e: events.append(e) if e["type"] == "prediction" else None)],
        networks=networks,
    )
    runtime.run()
    return events
