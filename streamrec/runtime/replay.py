"""A media file through the runtime as fast as it decodes, its prediction events collected: what a live
view would have shown, for scoring against a timeline (streamrec.train.timeline) or for inspection; or what the
networks said before smoothing, for trying smoothing settings without running the networks again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamrec.core.networks import Networks
from streamrec.runtime.options import RuntimeOptions
from streamrec.runtime.pipeline import Runtime
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import SourceSpec
from streamrec.runtime.types import Recognition


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


def recognitions(
    clip: Path, options: RuntimeOptions, networks: Networks | None = None
) -> list[tuple[float, Recognition]]:
    """What the networks said at each update of one file run as one stream, (media time, Recognition) in order,
    before smoothing: a Smoother run over them gives the `active` sets the runtime shows under any settings."""
    said: list[tuple[float, Recognition]] = []
    runtime = Runtime(
        [SourceSpec("file", str(clip), "replay", realtime=False)],
        options,
        networks=networks,
        observer=lambda _stream, t, recognition: said.append((t, recognition)),
    )
    runtime.run()
    return said
