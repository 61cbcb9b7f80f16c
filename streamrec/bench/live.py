"""One real-time stream whose instrument changes at known times, through the runtime and its websocket
server, watched by a websocket client: capture-to-emission latency as users see it, and how long after each
change the new instrument becomes active."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.results import LiveResult
from streamrec.bench.timing import Percentiles
from streamrec.core.networks import Networks
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sources import SourceSpec


def live_run(
    networks: Networks,
    bundle: Path | None,
    backend: str,
    clip: Path,
    changes: list[tuple[float, str]],
    hop_seconds: float,
) -> LiveResult:
    """The clip as one real-time stream through the runtime and its websocket server, watched by a
    websocket client until the stream ends. `bundle`: the one `networks` came from (its fusion rule and smoothing)."""
    from websockets.sync.client import connect

    options = RuntimeOptions(
        bundle=bundle, backend=backend, hop_seconds=hop_seconds, ws=("127.0.0.1", 0), wait_clients=1
    )
    runtime = Runtime([SourceSpec("file", str(clip), "bench", True)], options, networks=networks)
    thread = threading.Thread(target=runtime.run, name="bench-runtime", daemon=True)
    thread.start()
    if not runtime.ready.wait(60) or runtime.ws_port is None:
        runtime.stop()
        raise RuntimeError("the runtime did not start its websocket server")
    received: list[tuple[float, dict[str, Any]]] = []
    try:
        with connect(f"ws://127.0.0.1:{runtime.ws_port}", open_timeout=10) as client:
            for message in client:
                now = time.time()
                event = json.loads(message)
                received.append((now, event))
                if event["type"] == "status" and event["state"] in ("ended", "error"):
                    break
    finally:
        runtime.stop()
        thread.join(10)
    return analyse_live(backend, received, changes)


def analyse_live(
    backend: str, received: list[tuple[float, dict[str, Any]]], changes: list[tuple[float, str]]
) -> LiveResult:
    """Latencies and switch times from the events a client received, each with its time of receipt.

    A change at media time c happened, on the wall clock, when the source released that media: the
    capture time of an update (its wall time minus its latency) minus its media time gives the offset.
    A change is detected by the first update of its piece (media time in (c, next change]) that lists
    the new class as active.
    """
    predictions = [(now, e) for now, e in received if e["type"] == "prediction"]
    if not predictions:
        raise RuntimeError("the live run produced no predictions")
    emission = [e["latency_ms"] for _, e in predictions]
    captured = [(e["wall"] - e["latency_ms"] / 1e3) for _, e in predictions]
    to_client = [(now - c) * 1e3 for (now, _), c in zip(predictions, captured)]
    offset = float(np.median([c - e["t"] for c, (_, e) in zip(captured, predictions)]))
    switches, missed = [], 0
    for i, (change, name) in enumerate(changes[1:], start=1):
        next_change = changes[i + 1][0] if i + 1 < len(changes) else float("inf")
        hit = next((now for now, e in predictions if change < e["t"] <= next_change and name in e["active"]), None)
        if hit is None:
            missed += 1
        else:
            switches.append(hit - (offset + change))
    media = max(e["t"] for _, e in predictions)
    return LiveResult(
        backend,
        media,
        len(predictions),
        Percentiles.of(emission),
        Percentiles.of(to_client),
        switches,
        Percentiles.of(switches),
        missed,
        emission,
    )
