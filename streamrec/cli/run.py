"""`streamrec run`, `live` and `demo`: the runtime driven from the command line, stopped by Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamrec.cli.args import (
    _positive_float,
    _positive_int,
    add_outputs,
    add_runtime_model,
    add_triton_url,
    output_options,
)
from streamrec.core.assets import DEFAULT_BUNDLE, EXAMPLE_CLIP
from streamrec.core.errors import UserError

if TYPE_CHECKING:
    from streamrec.runtime.mqtt_sink import MqttOptions
    from streamrec.runtime.pipeline import Runtime
    from streamrec.runtime.sources import SourceSpec

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    _add_run(commands)
    _add_live(commands)
    _add_demo(commands)


def _add_run(commands: argparse._SubParsersAction) -> None:
    r = commands.add_parser(
        "run",
        help="recognise instruments in files, RTSP/HTTP streams or devices",
        description="Runs recognition on one or more sources at once, each its own stream: media files, "
        "rtsp:// or http(s):// URLs (HLS included), camera:N, mic:[DEVICE]. Files run as fast as "
        "possible by default, URLs and devices in real time.",
    )
    r.add_argument("sources", nargs="*", metavar="SOURCE")
    r.add_argument(
        "--streams",
        metavar="FILE",
        help="also run the sources listed in FILE: one per line, SOURCE [STREAM_ID], # comments (docs/deployment.md)",
    )
    r.add_argument(
        "--shard",
        metavar="K/N",
        help="run only this host's share (host K of N) of the --streams file; every host gets the same file "
        "and the split is decided by stream id, not by line order (docs/deployment.md)",
    )
    pace = r.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="pace files in real time (default for URLs/devices)")
    pace.add_argument("--fast", action="store_true", help="as fast as possible (default for files)")
    r.add_argument("--camera", type=int, action="append", metavar="N", help="add camera N as a stream (repeatable)")
    r.add_argument("--fps", type=_positive_float, help="frames per second taken from cameras (default 1)")
    r.add_argument(
        "--wait-clients",
        type=_positive_int,
        metavar="N",
        help="start the sources only once N websocket or web-view clients are connected",
    )
    add_runtime_model(r)
    add_outputs(r)
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    from streamrec.runtime.sources import SourceSpec, parse_source
    from streamrec.runtime.sources.streams_file import Shard, read_streams_file

    shard = None
    if args.shard is not None:
        if not args.streams:
            raise UserError("--shard needs --streams FILE: it splits that file's streams between hosts")
        try:
            shard = Shard.parse(args.shard)
        except ValueError as e:
            raise UserError(f"--shard: {e}") from None
    specs = [parse_source(s) for s in args.sources]
    if args.streams:
        listed, total = read_streams_file(Path(args.streams), shard)
        if shard is not None:
            ids = ", ".join(str(spec.stream_id) for spec in listed)
            log.info("shard %s: %d of the %d streams of %s: %s", shard, len(listed), total, args.streams, ids)
        specs += listed
    specs += [SourceSpec("camera", str(n), fps=args.fps) for n in args.camera or []]
    if not specs:
        raise UserError("give at least one SOURCE (file, URL, camera:N, mic:[DEVICE]), --streams FILE or --camera N")
    realtime = True if args.realtime else False if args.fast else None
    if args.wait_clients and not (args.ws or args.web):
        raise UserError("--wait-clients needs --ws or --web: clients connect to those")
    return run_streams(
        specs,
        Path(args.model) if args.model else None,
        args.backend,
        triton_url=args.triton_url,
        realtime=realtime,
        duration=args.duration,
        hop=args.hop,
        wait_clients=args.wait_clients or 0,
        **output_options(args),
    )


def _add_live(commands: argparse._SubParsersAction) -> None:
    li = commands.add_parser(
        "live",
        help="live recognition from a webcam (1 fps frames) and a microphone",
        description="Live camera + microphone recognition. Without --camera or --mic both defaults are used; "
        "with one of them, only that one.",
    )
    li.add_argument("--camera", nargs="?", const=0, metavar="N", help="camera index or device path (default 0)")
    li.add_argument("--mic", nargs="?", const="", metavar="DEVICE", help="input device name or index (default: system)")
    li.add_argument("--fps", type=_positive_float, help="frames per second taken from the camera (default 1)")
    add_runtime_model(li)
    add_outputs(li)
    li.set_defaults(func=cmd_live)


def cmd_live(args: argparse.Namespace) -> int:
    from streamrec.runtime.sources import live_sources

    camera, mic = args.camera, args.mic
    if camera is None and mic is None:
        camera, mic = 0, ""
    specs = live_sources(camera, mic, fps=args.fps)
    return run_streams(
        specs,
        Path(args.model) if args.model else None,
        args.backend,
        triton_url=args.triton_url,
        realtime=True,
        duration=args.duration,
        hop=args.hop,
        **output_options(args),
    )


def _add_demo(commands: argparse._SubParsersAction) -> None:
    d = commands.add_parser(
        "demo",
        help="the bundled example clip through the bundled model, live view + websocket server",
        description="Plays the bundled example clip (violin, piano, drums, trumpet) in real time through the "
        "bundled model: terminal live view and websocket server on 127.0.0.1:8765. Offline.",
    )
    d.add_argument("--fast", action="store_true", help="as fast as possible instead of real time")
    d.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "tensorrt", "triton"),
        help="inference backend (default torch)",
    )
    add_triton_url(d)
    add_outputs(d, ws_default="127.0.0.1:8765")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    # keywords only: run_demo's options grew from several sides, and a positional slip passed one for another
    return run_demo(
        fast=args.fast, duration=args.duration, backend=args.backend, triton_url=args.triton_url, **output_options(args)
    )


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
    hop: float | None = None,
    allow_origins: tuple[str, ...] = (),
    certfile: Path | None = None,
    keyfile: Path | None = None,
    mqtt: MqttOptions | None = None,
    triton_url: str | None = None,
) -> int:
    """The entry point of `streamrec run`, `live` and `demo`: runs until the sources end or Ctrl-C /
    SIGTERM, and returns the exit code (0; 2 when a stream ended in error; 128 + signal number).

    realtime: True paces every source in real time, False runs every source as fast as possible
    (devices are real time anyway), None keeps each source's default (files fast, URLs real time).
    hop: seconds between audio windows (None: the runtime's DEFAULT_HOP_SECONDS).
    mqtt: also publish the events to this MQTT broker.
    Raises UserError (SourceError, BundleError) for a missing file, device, bundle or a busy port.
    """
    from streamrec.runtime.pipeline import Runtime, RuntimeOptions
    from streamrec.runtime.windowing import DEFAULT_HOP_SECONDS

    specs = [
        spec if realtime is None or spec.kind in ("camera", "microphone") else _with_realtime(spec, realtime)
        for spec in sources
    ]
    options = RuntimeOptions(
        bundle=bundle_path,
        backend=backend,
        triton_url=triton_url,
        hop_seconds=DEFAULT_HOP_SECONDS if hop is None else hop,
        ws=ws,
        web=web,
        wait_clients=wait_clients,
        explain=explain,
        token=token,
        allow_origins=allow_origins,
        certfile=certfile,
        keyfile=keyfile,
        jsonl=jsonl,
        view=view,
        duration=duration,
    )
    sinks = []
    if mqtt is not None:
        from streamrec.runtime.mqtt_sink import MqttSink  # imported here: CLI start-up time

        sinks.append(MqttSink(mqtt))
    runtime = Runtime(specs, options, sinks=sinks)
    try:
        with _SignalStop(runtime):
            summary = runtime.run()
    finally:
        for sink in sinks:
            sink.close()  # run() closed it, unless it failed before opening the sinks (closing twice is a no-op)
    for stream_id, s in summary.streams.items():
        latency = f", latency p50 {s.latency_p50_ms:.0f} ms p95 {s.latency_p95_ms:.0f} ms" if s.latency_p50_ms else ""
        log.info("%s: %s %s; %d updates, %d skipped%s", stream_id, s.state, s.detail, s.updates, s.skipped, latency)
    return summary.exit_code


def _with_realtime(spec: SourceSpec, realtime: bool) -> SourceSpec:
    from streamrec.runtime.sources import SourceSpec

    return SourceSpec(spec.kind, spec.target, spec.stream_id, realtime, spec.fps)


def demo_sources(clip: Path = EXAMPLE_CLIP) -> list[SourceSpec]:
    """The demo's input: the bundled example clip, one stream called "demo"."""
    from streamrec.runtime.sources import SourceError, SourceSpec

    if not clip.is_file():
        raise SourceError(f"the example clip {clip} is missing; reinstall streamrec or use `streamrec run FILE`")
    return [SourceSpec("file", str(clip), "demo")]


def run_demo(
    *,
    fast: bool = False,
    duration: float | None = None,
    ws: tuple[str, int] | None = None,
    view: bool = True,
    jsonl: Path | None = None,
    token: str | None = None,
    web: tuple[str, int] | None = None,
    explain: bool = False,
    allow_origins: tuple[str, ...] = (),
    certfile: Path | None = None,
    keyfile: Path | None = None,
    mqtt: MqttOptions | None = None,
    backend: str = "torch",
    triton_url: str | None = None,
) -> int:
    """`streamrec demo`: the bundled model on the bundled example clip, through the live runtime.
    The demo always serves websockets: ws None means the default address (127.0.0.1:8765)."""
    from streamrec.runtime.broadcast import DEFAULT_HOST, DEFAULT_PORT

    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        raise UserError(f"the bundled model is missing from {DEFAULT_BUNDLE}; reinstall streamrec")
    return run_streams(
        demo_sources(),
        None,
        backend,
        ws or (DEFAULT_HOST, DEFAULT_PORT),
        token,
        jsonl,
        view,
        realtime=not fast,
        triton_url=triton_url,
        duration=duration,
        web=web,
        explain=explain,
        allow_origins=allow_origins,
        certfile=certfile,
        keyfile=keyfile,
        mqtt=mqtt,
    )
