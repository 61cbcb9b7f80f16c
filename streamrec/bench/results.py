"""What `streamrec bench` is asked and what it finds: the options, the targets of the benchmark issue and the
plain dataclasses every measurement returns, gathered in a BenchReport that report.py renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.media import SWITCH_ORDER
from streamrec.bench.timing import Percentiles
from streamrec.runtime.windowing import DEFAULT_HOP_SECONDS

# The targets of the benchmark issue, checked and printed by every run.
TARGETS = {
    "audio_p95_ms": 10.0,  # audio window inference (front end + network), batch 1, p95
    "capture_to_emission_p95_ms": 25.0,
    "switch_median_s": 1.5,
    "realtime_streams": 40,
    "offline_x_realtime": 100.0,
    # Issue #17: against the multiply-add limit measured in the same run (ComputeResult.streams_at_peak).
    "streams_share_of_limit": 0.40,  # real-time streams held
    "offline_share_of_limit": 0.50,  # offline x real time (one stream on the whole CPU)
    "rss_mb_at_rss_streams": 4096.0,  # peak RSS of a trial of BenchOptions.rss_streams streams
}


@dataclass(frozen=True)
class BenchOptions:
    bundle: Path | None = None  # None: the bundled model
    backends: tuple[str, ...] = ("torch", "onnxruntime")  # compared side by side; the last is "best"
    hop_seconds: float = DEFAULT_HOP_SECONDS
    repeats: int = 200  # timed calls per stage and backend
    piece_seconds: float = 4.0  # the switch clip: seconds per instrument piece
    pieces: int = len(SWITCH_ORDER)
    trial_seconds: float = 12.0  # seconds of media per concurrency trial
    first_streams: int = 10  # concurrency search: first N, doubled until a trial fails, then bisected
    max_streams: int = 160
    rss_streams: int = 100  # after the search: a trial of this many streams for its memory, if none had as many
    # The streams search once per process count, side by side (streams.trial_runner); None = 1 and one per core.
    processes: tuple[int, ...] | None = None
    offline_seconds: float = 180.0  # length of the offline clip
    workdir: Path | None = None  # where the test media are cut (default: a temporary folder)
    triton_url: str | None = None  # the server of backend "triton" (grpc://HOST:PORT)

    @classmethod
    def quick(cls, bundle: Path | None = None, backends: tuple[str, ...] = ("torch", "onnxruntime")) -> BenchOptions:
        """Seconds instead of minutes: for tests and a first look, not for figures."""
        return cls(
            bundle,
            backends,
            repeats=20,
            piece_seconds=3.0,
            pieces=3,
            trial_seconds=3.0,
            first_streams=1,
            max_streams=2,
            rss_streams=3,
            processes=(1,),
            offline_seconds=20.0,
        )


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageRow:
    stage: str
    backend: str  # "-" for stages that do not depend on the backend
    unit: str  # what one timed call does
    ms: Percentiles


@dataclass(frozen=True)
class LiveResult:
    backend: str
    media_seconds: float
    updates: int
    capture_to_emission_ms: Percentiles  # the runtime's own measure, in every prediction event
    capture_to_client_ms: Percentiles  # the same, up to the websocket client's receipt
    switch_s: list[float]  # per detected change: seconds from the change until the new class is active
    switch: Percentiles
    missed: int  # changes whose class never became active before the next change
    latencies_ms: list[float] = field(repr=False, default_factory=list)


@dataclass(frozen=True)
class StreamTrial:
    streams: int
    held: bool  # every stream kept real time: no window skipped or lost, p95 latency within a hop
    skipped: int
    latency_p95_ms: float  # worst stream
    cpu_percent: float  # of one core, whole process
    cpu_per_stream_percent: float
    rss_mb: float  # peak resident memory during the trial
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    latency_p50_ms: float = float("nan")  # all streams' updates together
    batches: dict[str, dict[str, float]] = field(default_factory=dict)  # RunSummary.batches: sizes of network calls
    processes: int = 1  # the streams split over this many processes (streams.trial_runner)


@dataclass(frozen=True)
class OfflineResult:
    backend: str
    media_seconds: float
    wall_seconds: float  # best of the timed runs
    cpu_seconds: float
    x_realtime: float
    updates: int


@dataclass(frozen=True)
class ComputeRow:
    network: str
    macs_per_call: int
    calls_per_media_second: float
    macs_per_media_second: float
    ms_per_call: float  # median, best backend, batch 1, one thread
    achieved_gmacs: float  # multiply-adds per second while the network runs
    share_of_peak: float  # of the one-thread peak


@dataclass(frozen=True)
class ComputeResult:
    peak_gmacs_one_thread: float
    peak_gmacs_all_threads: float
    threads: int
    rows: list[ComputeRow]
    macs_per_stream_second: float  # all networks, per second of one stream's media
    streams_at_peak: float  # streams the whole CPU could carry at its peak rate (an upper bound)


@dataclass
class BenchReport:
    machine: dict[str, str]
    command: str
    options: dict[str, Any]
    stages: list[StageRow] = field(default_factory=list)
    live: LiveResult | None = None
    trials: list[StreamTrial] = field(default_factory=list)
    offline: list[OfflineResult] = field(default_factory=list)
    compute: ComputeResult | None = None

    @property
    def best_streams(self) -> StreamTrial | None:
        """The most streams held (of any process count) below every count that fell behind with as many
        processes: a trial that held above one that fell behind (the memory trial, on a quieter moment of
        a shared machine) is luck, not capacity."""
        failed: dict[int, int] = {}
        for t in self.trials:
            if not t.held:
                failed[t.processes] = min(t.streams, failed.get(t.processes, t.streams))
        held = [t for t in self.trials if t.held and t.streams < failed.get(t.processes, t.streams + 1)]
        return max(held, key=lambda t: (t.streams, -t.processes)) if held else None

    def stage(self, name: str, backend: str) -> StageRow | None:
        return next((r for r in self.stages if r.stage == name and r.backend == backend), None)

    def targets(self) -> list[tuple[str, str, str, bool | None]]:
        """(target, required, measured, met) for every target of the benchmark issue."""
        best = self.options["backends"][-1]
        audio = self.stage("audio (front end + network)", best)
        best_streams = self.best_streams
        offline = next((o for o in self.offline if o.backend == best), None)
        rows: list[tuple[str, str, str, bool | None]] = []

        def add(name: str, required: str, value: float | None, fmt: str, met: Callable[[float], bool]) -> None:
            ok = None if value is None or np.isnan(value) else met(value)
            rows.append((name, required, "not measured" if value is None else fmt.format(value), ok))

        add(
            f"audio window inference p95, batch 1 ({best})",
            f"<= {TARGETS['audio_p95_ms']:g} ms",
            audio.ms.p95 if audio else None,
            "{:.2f} ms",
            lambda v: v <= TARGETS["audio_p95_ms"],
        )
        add(
            "capture-to-emission p95",
            f"<= {TARGETS['capture_to_emission_p95_ms']:g} ms",
            self.live.capture_to_emission_ms.p95 if self.live else None,
            "{:.1f} ms",
            lambda v: v <= TARGETS["capture_to_emission_p95_ms"],
        )
        add(
            f"switch detection median (hop {self.options['hop_seconds']:g} s)",
            f"<= {TARGETS['switch_median_s']:g} s",
            self.live.switch.p50 if self.live else None,
            "{:.2f} s",
            lambda v: v <= TARGETS["switch_median_s"],
        )
        held_by = f" ({best_streams.processes} processes)" if best_streams and best_streams.processes > 1 else ""
        add(
            f"concurrent real-time streams{held_by}",
            f">= {TARGETS['realtime_streams']}",
            best_streams.streams if best_streams else (0 if self.trials else None),
            "{:.0f}",
            lambda v: v >= TARGETS["realtime_streams"],
        )
        add(
            f"offline throughput ({best})",
            f">= {TARGETS['offline_x_realtime']:g}x real time",
            offline.x_realtime if offline else None,
            "{:.0f}x",
            lambda v: v >= TARGETS["offline_x_realtime"],
        )
        limit = self.compute.streams_at_peak if self.compute else None
        held = (best_streams.streams if best_streams else 0) if self.trials else None
        add(
            f"real-time streams held / multiply-add limit ({limit or 0:.0f})",
            f">= {TARGETS['streams_share_of_limit']:.0%}",
            held / limit if held is not None and limit else None,
            f"{held} streams = {{:.0%}}",
            lambda v: v >= TARGETS["streams_share_of_limit"],
        )
        add(
            f"offline x real time / multiply-add limit ({limit or 0:.0f}x)",
            f">= {TARGETS['offline_share_of_limit']:.0%}",
            offline.x_realtime / limit if offline and limit else None,
            f"{offline.x_realtime if offline else 0:.0f}x = {{:.0%}}",
            lambda v: v >= TARGETS["offline_share_of_limit"],
        )
        n = self.options.get("rss_streams") or 0
        # The smallest trial of n or more streams; of those, the one split over the most processes (the most memory).
        by_size = sorted(self.trials, key=lambda t: (t.streams, -t.processes))
        probe = next((t for t in by_size if t.streams >= n), None) if n else None
        add(
            f"peak RSS at {probe.streams if probe else n} streams",
            f"< {TARGETS['rss_mb_at_rss_streams']:.0f} MB",
            probe.rss_mb if probe else None,
            "{:.0f} MB",
            lambda v: v < TARGETS["rss_mb_at_rss_streams"],
        )
        return rows

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [dict(zip(("target", "required", "measured", "met"), t)) for t in self.targets()]
        return data
