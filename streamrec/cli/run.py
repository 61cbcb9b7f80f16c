"""`streamrec run`, `live` and `demo`: the runtime driven from the command line, stopped by Ctrl-C / SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamrec.core.assets import DEFAULT_BUNDLE, EXAMPLE_CLIP
from streamrec.core.errors import UserError
from streamrec.runtime.broadcast import DEFAULT_HOST, DEFAULT_PORT
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sources import SourceError, SourceSpec
from streamrec.runtime.windowing import DEFAULT_HOP_SECONDS

log = logging.getLogger(__name__)


@dataclass
class _SignalStop:
    """Installs SIGINT/SIGTERM handlers that stop a runtime (main thread only), and restores them."""

    runtime: Runtime
    previous: dict[int, Any] = field(default_factory=dict)

    def __enter__(self) -> _SignalStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        log.info("%s: stopping", name)
        self.runtime.stop(name)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run_streams(
    sources: Sequence[SourceSpec],
    bundle_path: Path | None = None,
    backend: str = "torch",
    ws: tuple[str, int] | None = None,
    token: str | None = None,
    jsonl: Path | None = None,
    view: bool = True,
    realtime: bool | None = None,
    web: tuple[str, int] | None = None,
    wait_clients: int = 0,
    explain: bool = False,
    duration: float | None = None,
    hop: float = DEFAULT_HOP_SECONDS,
) -> int:
    """The entry point of `streamrec run`, `live` and `demo`: runs until the sources end or Ctrl-C /
    SIGTERM, and returns the exit code (0; 2 when a stream ended in error; 128 + signal number).

    realtime: True paces every source in real time, False runs every source as fast as possible
    (devices are real time anyway), None keeps each source's default (files fast, URLs real time).
    Raises UserError (SourceError, BundleError) for a missing file, device, bundle or a busy port.
    """
    specs = [
        spec if realtime is None or spec.kind in ("camera", "microphone") else _with_realtime(spec, realtime)
        for spec in sources
    ]
    options = RuntimeOptions(
        bundle=bundle_path,
        backend=backend,
        hop_seconds=hop,
        ws=ws,
        web=web,
        wait_clients=wait_clients,
        explain=explain,
        token=token,
        jsonl=jsonl,
        view=view,
        duration=duration,
    )
    runtime = Runtime(specs, options)
    with _SignalStop(runtime):
        summary = runtime.run()
    for stream_id, s in summary.streams.items():
        latency = f", latency p50 {s.latency_p50_ms:.0f} ms p95 {s.latency_p95_ms:.0f} ms" if s.latency_p50_ms else ""
        log.info("%s: %s %s; %d updates, %d skipped%s", stream_id, s.state, s.detail, s.updates, s.skipped, latency)
    return summary.exit_code


def _with_realtime(spec: SourceSpec, realtime: bool) -> SourceSpec:
    return SourceSpec(spec.kind, spec.target, spec.stream_id, realtime, spec.fps)


def demo_sources(clip: Path = EXAMPLE_CLIP) -> list[SourceSpec]:
    """The demo's input: the bundled example clip, one stream called "demo"."""
    if not clip.is_file():
        raise SourceError(f"the example clip {clip} is missing; reinstall streamrec or use `streamrec run FILE`")
    return [SourceSpec("file", str(clip), "demo")]


def run_demo(
    fast: bool = False,
    duration: float | None = None,
    ws: tuple[str, int] | None = (DEFAULT_HOST, DEFAULT_PORT),
    view: bool = True,
    jsonl: Path | None = None,
    token: str | None = None,
    web: tuple[str, int] | None = None,
    explain: bool = False,
) -> int:
    """`streamrec demo`: the bundled model on the bundled example clip, through the live runtime."""
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        raise UserError(f"the bundled model is missing from {DEFAULT_BUNDLE}; reinstall streamrec")
    return run_streams(
        demo_sources(),
        None,
        "torch",
        ws,
        token,
        jsonl,
        view,
        realtime=not fast,
        duration=duration,
        web=web,
        explain=explain,
    )
