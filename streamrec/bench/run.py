"""`streamrec bench`: how fast the recognizer runs on this machine, measured through the runtime's own code.

Five measurements, each a function returning plain dataclasses (run_bench runs them in order):

  stages    per-call latency of every stage of an update, torch and ONNX Runtime side by side
  live      one real-time stream whose instrument changes at known times, watched by a websocket client:
            capture-to-emission latency and the time from each change until the new class is active
  streams   the most identical real-time streams one process carries without falling behind
  offline   a 3-minute clip processed as fast as possible, in multiples of real time, per backend
  compute   each network's multiply-adds per second of media, against this CPU's measured peak

Everything runs on the shipped runtime (Runtime, FileSource, Recognizer, the websocket Broadcaster); the
test media are cut from the bundled example clip with ffmpeg. Backends are timed round-robin within one run,
so the load of a shared machine hits them alike: compare ratios rather than absolute figures across runs.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.core.assets import EXAMPLE_CLIP, EXAMPLE_SEGMENTS
from streamrec.core.bundle import Bundle
from streamrec.core.errors import UserError
from streamrec.core.features import preprocess_frame
from streamrec.core.media import decode_audio, decode_frames
from streamrec.core.networks import NetworkInfo, Networks
from streamrec.core.scores import fusion_inputs
from streamrec.engines import load_networks
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.recognizer import Recognizer, Request
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.smoothing import Smoother
from streamrec.runtime.sources import CaptureFormat, SourceSpec
from streamrec.runtime.sources.file import decode_costs
from streamrec.runtime.types import AudioWindow, Frame, prediction_event
from streamrec.runtime.windowing import DEFAULT_HOP_SECONDS

log = logging.getLogger(__name__)

# The targets of the benchmark issue, checked and printed by every run.
TARGETS = {
    "audio_p95_ms": 10.0,  # audio window inference (front end + network), batch 1, p95
    "capture_to_emission_p95_ms": 25.0,
    "switch_median_s": 1.5,
    "realtime_streams": 40,
    "offline_x_realtime": 100.0,
}
# Order of the example clip's four instruments in the switch clip: every neighbour pair differs and
# every instrument follows every other at least once.
SWITCH_ORDER = (0, 1, 2, 3, 1, 0, 3, 2, 0, 2, 1, 3)


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
    offline_seconds: float = 180.0  # length of the offline clip
    workdir: Path | None = None  # where the test media are cut (default: a temporary folder)

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
            offline_seconds=20.0,
        )


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        if not len(values):
            return cls(float("nan"), float("nan"), float("nan"), 0)
        p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95, 99])
        return cls(float(p50), float(p95), float(p99), len(values))


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
        held = [t for t in self.trials if t.held]
        return max(held, key=lambda t: t.streams) if held else None

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
        add(
            "concurrent real-time streams",
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
        return rows

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [dict(zip(("target", "required", "measured", "met"), t)) for t in self.targets()]
        return data


# --- machine and media ----------------------------------------------------------------------------


def describe_machine() -> dict[str, str]:
    import onnxruntime
    import torch

    cpu = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu == "unknown":
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
        memory = next(
            line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
        memory_gib = f"{int(memory) / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        memory_gib = "unknown"
    vector = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "vector extensions": ", ".join(vector) or "none reported",
        "memory": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "gpu": "none" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
    }


def _ffmpeg(*args: str) -> None:
    try:
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("ffmpeg is not installed; scripts/install.sh installs it") from None
    except subprocess.CalledProcessError as e:
        raise UserError(f"ffmpeg failed: {e.stderr.strip().splitlines()[-1] if e.stderr else e}") from e


def make_switch_clip(out: Path, piece_seconds: float, pieces: int) -> list[tuple[float, str]]:
    """Cuts pieces of the example clip's instrument segments into a clip whose instrument changes every
    piece_seconds; returns (media time, class) of every change, the first piece's start included."""
    segments = json.loads(EXAMPLE_SEGMENTS.read_text())["segments"]
    order = [SWITCH_ORDER[i % len(SWITCH_ORDER)] % len(segments) for i in range(pieces)]
    filters, inputs = [], []
    for i, index in enumerate(order):
        segment = segments[index]
        # Skip the first second of each segment, so no piece starts at the example's own change.
        start = segment["start"] + min(1.0, max(0.0, segment["end"] - segment["start"] - piece_seconds))
        end = start + piece_seconds
        filters.append(f"[0:v]trim={start}:{end},setpts=PTS-STARTPTS[v{i}]")
        filters.append(f"[0:a]atrim={start}:{end},asetpts=PTS-STARTPTS[a{i}]")
        inputs.append(f"[v{i}][a{i}]")
    graph = ";".join(filters) + ";" + "".join(inputs) + f"concat=n={len(order)}:v=1:a=1[v][a]"
    _ffmpeg(
        "-i",
        str(EXAMPLE_CLIP),
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "10",
        "-c:a",
        "aac",
        str(out),
    )
    return [(i * piece_seconds, segments[index]["class"]) for i, index in enumerate(order)]


def make_long_clip(out: Path, seconds: float) -> None:
    """The example clip looped to `seconds` (stream copy: no re-encoding)."""
    _ffmpeg("-stream_loop", "-1", "-i", str(EXAMPLE_CLIP), "-t", f"{seconds:g}", "-c", "copy", str(out))


# --- stages ---------------------------------------------------------------------------------------


def time_round_robin(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Milliseconds per call, one call of each in turn, so a passing load hits every candidate alike.
    The first `warmup` calls of each are not timed (allocations, lazy kernel selection)."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def stage_latencies(networks: dict[str, Networks], clip: Path, repeats: int, hop_seconds: float) -> list[StageRow]:
    """Every stage of one update at batch 1, on windows and frames of a real clip: decode (per packet),
    front end, audio network, frame network, fusion, emission (smoothing, event, JSON)."""
    info = next(iter(networks.values())).info
    rows: list[StageRow] = []
    packets = decode_costs(clip, CaptureFormat(info.sample_rate, info.frames))
    rows.append(StageRow("decode", "-", "one packet (audio or video)", Percentiles.of([c * 1e3 for _, c in packets])))

    audio = decode_audio(clip, info.sample_rate) if info.has_audio else None
    decoded = decode_frames(clip, info.frames.fps) if info.has_video else None
    images = np.stack([preprocess_frame(f, info.frames) for f in decoded[0]]) if decoded is not None else None
    window = None
    if audio is not None:  # a window from the middle of the clip, zero-padded if the clip is short
        piece = audio[max(0, len(audio) // 2 - info.window_samples) :][: info.window_samples]
        window = np.pad(piece, (0, info.window_samples - len(piece))).astype(np.float32)[None]
    image = images[:1] if images is not None else None

    def per_backend(stage: str, unit: str, make: Callable[[str, Networks], Callable[[], object]]) -> None:
        times = time_round_robin({name: make(name, n) for name, n in networks.items()}, repeats)
        rows.extend(StageRow(stage, name, unit, Percentiles.of(t)) for name, t in times.items())

    if window is not None:
        per_backend("front end", "log-mel of one window", lambda name, n: lambda: n.frontend(window))
        logmel = {name: n.frontend(window) for name, n in networks.items()}
        per_backend("audio network", "one window's log-mel", lambda name, n: lambda: n.audio_features(logmel[name]))
        per_backend("audio (front end + network)", "one window", lambda name, n: lambda: n.audio(window))
    if image is not None:
        per_backend("frame network", "one frame", lambda name, n: lambda: n.frames(image))
    if info.has_fusion:
        request = _fusion_request(info, window, images)
        fuse_inputs = {name: _fusion_inputs(n, request) for name, n in networks.items()}
        per_backend(
            "fusion",
            f"one update (1 audio + {info.k_frames} frames)",
            lambda name, n: lambda: n.fuse(*fuse_inputs[name]),
        )
    # The whole recognizer at batch 1 with frames cached, as a live update runs it after the frame thread.
    if window is not None:
        recognizers = {name: Recognizer(n) for name, n in networks.items()}
        request = _fusion_request(info, window, images)
        for r in recognizers.values():
            r([request])
        per_backend(
            "update (recognizer, frames cached)", "one update", lambda name, n: lambda: recognizers[name]([request])
        )
    # Emission: smoothing, the prediction event, its JSON text (what every sink and client receives).
    result = Recognizer(next(iter(networks.values())))([_fusion_request(info, window, images)])[0]
    smoother = Smoother(info.classes)
    clock = itertools.count()

    def emit() -> None:
        t = next(clock) * hop_seconds
        smoothed = smoother.update(t, result.fused, result.background, result.energy_db, result.audio)
        json.dumps(
            prediction_event("s", 0, t, time.time(), info.classes, result, smoothed.active, 1.0), separators=(",", ":")
        )

    emission = time_round_robin({"emission": emit}, repeats)["emission"]
    rows.append(StageRow("emission", "-", "smoothing + event + JSON", Percentiles.of(emission)))
    return rows


def _fusion_request(info: NetworkInfo, window: np.ndarray | None, images: np.ndarray | None) -> Request:
    audio_window = None
    if window is not None:
        audio_window = AudioWindow(window[0], 1.0, time.time(), len(window[0]))
    frames: tuple[Frame, ...] = ()
    if images is not None:
        frames = tuple(Frame(images[i % len(images)], float(i), time.time()) for i in range(info.k_frames))
    return Request("s", audio_window, frames)


def _fusion_inputs(networks: Networks, request: Request) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fusion network's inputs for one update, built as the Recognizer builds them."""
    info = networks.info
    audio = networks.audio(request.window.samples[None])[1] if request.window is not None else None
    frames = networks.frames(np.stack([f.image for f in request.frames]))[1] if request.frames else None
    return fusion_inputs(audio, frames, info.k_frames, info.audio_dim or 1, info.video_dim or 1)


# --- live -----------------------------------------------------------------------------------------


def live_run(
    networks: Networks, backend: str, clip: Path, changes: list[tuple[float, str]], hop_seconds: float
) -> LiveResult:
    """The clip as one real-time stream through the runtime and its websocket server, watched by a
    websocket client until the stream ends."""
    from websockets.sync.client import connect

    options = RuntimeOptions(backend=backend, hop_seconds=hop_seconds, ws=("127.0.0.1", 0), wait_clients=1)
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


# --- concurrent streams ---------------------------------------------------------------------------


def _rss_mb() -> float:
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stream_trial(
    networks: Networks, backend: str, clip: Path, streams: int, seconds: float, hop_seconds: float
) -> StreamTrial:
    """`streams` identical real-time file streams started at once for `seconds` of media."""
    latencies: list[float] = []
    sink = CallbackSink(lambda e: latencies.append(e["latency_ms"]) if e["type"] == "prediction" else None)
    options = RuntimeOptions(backend=backend, hop_seconds=hop_seconds, duration=seconds)
    specs = [SourceSpec("file", str(clip), f"s{i}", True) for i in range(streams)]
    runtime = Runtime(specs, options, sinks=[sink], networks=networks)
    peak = [_rss_mb()]
    done = threading.Event()

    def sample_memory() -> None:
        while not done.wait(0.25):
            peak[0] = max(peak[0], _rss_mb())

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    cpu0, wall0 = time.process_time(), time.monotonic()
    summary = runtime.run()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    done.set()
    sampler.join()
    skipped = sum(s.skipped for s in summary.streams.values())
    worst_p95 = max((s.latency_p95_ms or float("inf")) for s in summary.streams.values())
    ended = all(s.state == "ended" for s in summary.streams.values())
    held = ended and skipped == 0 and worst_p95 <= hop_seconds * 1e3
    cpu_percent = 100 * cpu / wall
    return StreamTrial(streams, held, skipped, worst_p95, cpu_percent, cpu_percent / streams, peak[0], latencies)


def max_realtime_streams(
    networks: Networks,
    backend: str,
    clip: Path,
    o: BenchOptions,
    progress: Callable[[StreamTrial], None] = lambda t: None,
) -> list[StreamTrial]:
    """Doubles N from o.first_streams until a trial falls behind (or o.max_streams), then bisects
    to within about 10 %; returns every trial in the order run."""
    trials: list[StreamTrial] = []

    def trial(n: int) -> bool:
        result = stream_trial(networks, backend, clip, n, o.trial_seconds, o.hop_seconds)
        trials.append(result)
        progress(result)
        return result.held

    search_streams(trial, o.first_streams, o.max_streams)
    return trials


def search_streams(holds: Callable[[int], bool], first: int, maximum: int) -> int:
    """The largest N in 1..maximum for which holds(N), to within about 10 % (0 when even `first` fails):
    N doubles from `first` until it fails, then the gap is bisected. Assumes holding is monotonic in N."""
    good, bad = 0, None
    n = max(1, min(first, maximum))
    while True:
        if not holds(n):
            bad = n
            break
        good = n
        if n >= maximum:
            break
        n = min(2 * n, maximum)
    while bad is not None and bad - good > max(1, good // 10):
        middle = (good + bad) // 2
        if holds(middle):
            good = middle
        else:
            bad = middle
    return good


# --- offline --------------------------------------------------------------------------------------


def offline_throughput(
    networks: Networks, backend: str, clip: Path, media_seconds: float, runs: int = 2
) -> OfflineResult:
    """The clip through the runtime as fast as it goes (`streamrec run --fast`); best of `runs` after a
    warm-up on the example clip."""

    def once(path: Path) -> tuple[float, float, int]:
        runtime = Runtime(
            [SourceSpec("file", str(path), "offline", False)], RuntimeOptions(backend=backend), networks=networks
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = runtime.run()
        return time.perf_counter() - wall0, time.process_time() - cpu0, summary.streams["offline"].updates

    once(EXAMPLE_CLIP)
    wall, cpu, updates = min(once(clip) for _ in range(runs))
    return OfflineResult(backend, media_seconds, wall, cpu, media_seconds / wall, updates)


# --- compute --------------------------------------------------------------------------------------


def peak_gmacs(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """This CPU's practical peak: a large float32 matrix product in torch (MKL/oneDNN), best of
    `repeats`, in billions of multiply-adds per second."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return size**3 / best / 1e9


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def compute_budget(bundle: Bundle, stages: list[StageRow], backend: str, hop_seconds: float) -> ComputeResult:
    """Multiply-adds per call (torch's FLOP counter on the bundle's modules; the log-mel FFT is not
    counted), per second of media at the runtime's rates, and the rate reached against the peak."""
    import torch

    from streamrec.core.audio_setup import AudioSetup
    from streamrec.core.models import load_network
    from streamrec.train.report import multiply_adds

    info = NetworkInfo.from_bundle(bundle)
    rows = []
    if info.has_audio:
        setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
        frames = 1 + info.window_samples // setup.frontend.hop_length
        example = torch.randn(1, setup.frontend.n_mels, frames)
        rows.append(("audio network", multiply_adds(load_network(bundle, "audio").eval(), example), 1 / hop_seconds))
    if info.has_video:
        size = info.frames.crop
        example = torch.randn(1, 3, size, size)
        rows.append(("frame network", multiply_adds(load_network(bundle, "video").eval(), example), info.frames.fps))
    if info.has_fusion:
        inputs = (torch.randn(1, info.audio_dim), torch.randn(1, info.k_frames, info.video_dim), torch.ones(1, 2))
        rows.append(("fusion", multiply_adds(load_network(bundle, "fusion").eval(), *inputs), 1 / hop_seconds))
    one, threads = peak_gmacs(1), os.cpu_count() or 1
    many = peak_gmacs(threads)
    out = []
    for name, macs, rate in rows:
        stage = next((r for r in stages if r.stage == name and r.backend == backend), None)
        ms = stage.ms.p50 if stage else float("nan")
        achieved = macs / (ms / 1e3) / 1e9 if stage else float("nan")
        out.append(ComputeRow(name, int(macs), rate, macs * rate, ms, achieved, achieved / one))
    per_stream = sum(r.macs_per_media_second for r in out)
    return ComputeResult(one, many, threads, out, per_stream, many * 1e9 / per_stream if per_stream else float("inf"))


# --- all of it ------------------------------------------------------------------------------------


def run_bench(o: BenchOptions, command: str, say: Callable[[str], None] = log.info) -> BenchReport:
    """Every measurement in turn; `say` reports progress (a line per step)."""
    bundle = Bundle.load(o.bundle)
    if not o.backends:
        raise UserError("give at least one backend")
    report = BenchReport(describe_machine(), command, {**asdict(o), "bundle": str(bundle.root)})
    best = o.backends[-1]
    with tempfile.TemporaryDirectory(dir=o.workdir) as tmp:
        work = Path(tmp)
        say("cutting the test media from the example clip (ffmpeg)")
        switch_clip, long_clip = work / "switches.mp4", work / "long.mp4"
        changes = make_switch_clip(switch_clip, o.piece_seconds, o.pieces)
        make_long_clip(long_clip, o.offline_seconds)
        say(f"loading the networks: {', '.join(o.backends)} (engines are exported on first use)")
        # One intra-op thread per network, as the runtime runs them (pipeline.RuntimeOptions.threads).
        networks = {b: load_networks(bundle.root, b, threads=1) for b in o.backends}
        say(f"stages: {o.repeats} timed calls per stage and backend")
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the runtime runs (RuntimeOptions.threads)
        try:
            report.stages = stage_latencies(networks, EXAMPLE_CLIP, o.repeats, o.hop_seconds)
        finally:
            torch.set_num_threads(torch_threads)
        say(f"compute: multiply-adds and this CPU's peak ({best})")
        report.compute = compute_budget(bundle, report.stages, best, o.hop_seconds)
        say(f"live: {o.pieces * o.piece_seconds:g} s in real time with {len(changes) - 1} instrument changes ({best})")
        report.live = live_run(networks[best], best, switch_clip, changes, o.hop_seconds)
        say(f"streams: {o.trial_seconds:g} s trials from {o.first_streams} streams up ({best})")
        report.trials = max_realtime_streams(
            networks[best],
            best,
            EXAMPLE_CLIP,
            o,
            lambda t: say(
                f"  {t.streams} streams: {'held' if t.held else 'fell behind'}, worst p95 "
                f"{t.latency_p95_ms:.0f} ms, {t.skipped} skipped, {t.cpu_percent:.0f}% CPU"
            ),
        )
        for backend in o.backends:
            say(f"offline: {o.offline_seconds:g} s as fast as possible ({backend})")
            report.offline.append(offline_throughput(networks[backend], backend, long_clip, o.offline_seconds))
    return report
