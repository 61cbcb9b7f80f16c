"""`streamrec bench --soak SECONDS`: one real-time stream for a long time, watched by a websocket client
and written to a JSON-lines file, sampled for what leaks or drifts: resident memory, OS threads, open
descriptors, gaps between the events the client receives and windows the runtime skipped.

The stream is the bundled example clip looped to the soak's length (stream copy, media.make_long_clip),
paced in real time through the runtime's own code, as `streamrec run --realtime --ws --jsonl` runs it.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamrec.bench.media import make_long_clip
from streamrec.core.networks import Networks
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sources import SourceSpec
from streamrec.runtime.windowing import DEFAULT_HOP_SECONDS

# Targets of the soak (issue #20): memory flat, events steady, nothing skipped.
RSS_GROWTH_TARGET_PCT = 5.0
MAX_GAP_TARGET_S = 2.0
REALTIME_TARGET = 0.98  # media seconds per wall second: a file paced in real time that falls behind re-anchors
WARMUP_FRACTION = 0.1  # RSS growth is measured from this far into the run (first allocations settle)
WARMUP_MAX_S = 60.0
CLIENT_TIMEOUT_S = 30.0  # no message this long: the run is stuck, the soak fails rather than hangs


@dataclass(frozen=True)
class SoakSample:
    elapsed_s: float  # wall seconds since the first prediction reached the client
    rss_mb: float
    threads: int  # OS threads of the process (the runtime's, the websocket server's, the networks' pools)
    fds: int  # open file descriptors
    predictions: int  # prediction events the client received so far
    max_gap_s: float  # longest wait between two consecutive events at the client, in this interval
    skipped: int  # windows skipped so far: holes in the media times of the predictions received


@dataclass
class SoakResult:
    seconds: float
    backend: str
    hop_seconds: float
    samples: list[SoakSample] = field(default_factory=list)
    predictions: int = 0
    jsonl_lines: int = 0  # predictions and status events written to the --jsonl file
    max_gap_s: float = 0.0
    skipped: int = 0  # seen by the client
    runtime_skipped: int = 0  # the runtime's own count (summary): windows skipped or lost
    final_state: str = ""
    media_s: float = 0.0  # media time from the first prediction the client received to the last
    wall_s: float = 0.0  # wall time between their receipts

    @property
    def rss_growth_pct(self) -> float:
        """RSS at the end against RSS after the warm-up, in percent."""
        if len(self.samples) < 2:
            return 0.0
        warmup = min(WARMUP_MAX_S, WARMUP_FRACTION * self.seconds)
        base = next((s for s in self.samples if s.elapsed_s >= warmup), self.samples[0])
        return 100.0 * (self.samples[-1].rss_mb - base.rss_mb) / base.rss_mb

    @property
    def realtime_ratio(self) -> float:
        """Media seconds the client received per wall second: 1.0 when the stream kept real time. A starved
        file source re-anchors its clock (sources.base.Pacer) and skips no window, so only this shows it."""
        return self.media_s / self.wall_s if self.wall_s > 0 else 0.0

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(target, required, measured, met) of the soak's targets."""
        return [
            (
                "RSS growth",
                f"< {RSS_GROWTH_TARGET_PCT:g} %",
                f"{self.rss_growth_pct:+.1f} %",
                self.rss_growth_pct < RSS_GROWTH_TARGET_PCT,
            ),
            (
                "max event gap",
                f"<= {MAX_GAP_TARGET_S:g} s",
                f"{self.max_gap_s:.2f} s",
                self.max_gap_s <= MAX_GAP_TARGET_S,
            ),
            (
                "skipped windows",
                "0",
                f"{self.skipped} (runtime: {self.runtime_skipped})",
                self.skipped == 0 and self.runtime_skipped == 0,
            ),
            (
                "media per wall second",
                f">= {REALTIME_TARGET:g}",
                f"{self.realtime_ratio:.3f}",
                self.realtime_ratio >= REALTIME_TARGET,
            ),
            ("stream end", "ended", self.final_state, self.final_state == "ended"),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "samples"},
            "rss_growth_pct": self.rss_growth_pct,
            "realtime_ratio": self.realtime_ratio,
            "targets": [dict(zip(("target", "required", "measured", "met"), t)) for t in self.targets()],
            "samples": [asdict(s) for s in self.samples],
        }


def process_usage() -> tuple[float, int, int]:
    """(RSS in MB, OS threads, open descriptors) of this process, from /proc (Linux)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    rss_mb = int(status["VmRSS"].split()[0]) / 1024
    return rss_mb, int(status["Threads"]), len(os.listdir("/proc/self/fd"))


class _Watch:
    """What the websocket client saw, updated by its thread and read by the sampler (under a lock)."""

    def __init__(self, hop_seconds: float) -> None:
        self.hop = hop_seconds
        self.lock = threading.Lock()
        self.started: float | None = None  # monotonic time of the first prediction
        self.last: float | None = None
        self.predictions = 0
        self.skipped = 0
        self.gap = 0.0  # longest gap since the last sample
        self.max_gap = 0.0
        self.last_t: float | None = None
        self.first_t: float | None = None

    def event(self, event: dict[str, Any], now: float) -> None:
        if event.get("type") != "prediction":
            return
        with self.lock:
            if self.started is None:
                self.started = now
            if self.last is not None:
                self.gap = max(self.gap, now - self.last)
                self.max_gap = max(self.max_gap, now - self.last)
            self.last = now
            self.predictions += 1
            t = float(event["t"])
            self.first_t = t if self.first_t is None else self.first_t
            if self.last_t is not None:
                # Updates come every hop of media; a longer step means windows were skipped.
                self.skipped += max(0, round((t - self.last_t) / self.hop) - 1)
            self.last_t = t

    def sample(self, now: float) -> SoakSample:
        rss, threads, fds = process_usage()
        with self.lock:
            quiet = now - self.last if self.last is not None else 0.0  # a gap still open counts too
            gap, self.gap = max(self.gap, quiet), 0.0
            elapsed = now - self.started if self.started is not None else 0.0
            return SoakSample(round(elapsed, 1), rss, threads, fds, self.predictions, gap, self.skipped)


def soak(
    networks: Networks,
    bundle: Path | None,
    backend: str,
    seconds: float,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    interval: float | None = None,
    workdir: Path | None = None,
    progress: Callable[[SoakSample], None] = lambda sample: None,
) -> SoakResult:
    """The looped example clip as one real-time stream for `seconds` of media, through the runtime with
    its websocket server and a --jsonl file, a websocket client receiving every event; sampled every
    `interval` seconds (default: about 120 samples, 1 to 30 s apart). `bundle`: the one `networks` came from."""
    from websockets.sync.client import connect

    interval = interval or min(30.0, max(1.0, seconds / 120))
    result = SoakResult(seconds, backend, hop_seconds)
    watch = _Watch(hop_seconds)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        clip, jsonl = Path(tmp) / "soak.mp4", Path(tmp) / "soak.jsonl"
        make_long_clip(clip, seconds + 1.0)
        options = RuntimeOptions(
            bundle=bundle,
            backend=backend,
            hop_seconds=hop_seconds,
            ws=("127.0.0.1", 0),
            wait_clients=1,
            jsonl=jsonl,
            duration=seconds,
        )
        runtime = Runtime([SourceSpec("file", str(clip), "soak", True)], options, networks=networks)
        summary: list[Any] = []
        thread = threading.Thread(target=lambda: summary.append(runtime.run()), name="soak-runtime", daemon=True)
        thread.start()
        if not runtime.ready.wait(60) or runtime.ws_port is None:
            runtime.stop()
            raise RuntimeError("the runtime did not start its websocket server")
        done = threading.Event()

        def sample_loop() -> None:
            while not done.wait(interval):
                result.samples.append(watch.sample(time.monotonic()))
                progress(result.samples[-1])  # a long soak shows how it goes, and leaves a trace if it dies

        sampler = threading.Thread(target=sample_loop, name="soak-sampler", daemon=True)
        try:
            with connect(f"ws://127.0.0.1:{runtime.ws_port}", open_timeout=10) as client:
                sampler.start()
                while True:
                    event = json.loads(client.recv(timeout=CLIENT_TIMEOUT_S))
                    watch.event(event, time.monotonic())
                    if event["type"] == "status" and event["state"] in ("ended", "error"):
                        result.final_state = event["state"]
                        done.set()  # the last sample while the run still holds its threads and files
                        sampler.join()
                        result.samples.append(watch.sample(time.monotonic()))
                        break
        finally:
            done.set()
            runtime.stop()
            thread.join(10)
            if sampler.is_alive():
                sampler.join()
        result.predictions, result.skipped, result.max_gap_s = watch.predictions, watch.skipped, watch.max_gap
        if watch.started is not None and watch.last is not None and watch.first_t is not None:
            result.media_s, result.wall_s = (watch.last_t or 0.0) - watch.first_t, watch.last - watch.started
        result.jsonl_lines = sum(1 for _ in jsonl.open(encoding="utf-8")) if jsonl.exists() else 0
        if summary:
            result.runtime_skipped = sum(s.skipped for s in summary[0].streams.values())
    return result


SAMPLE_HEADER = ["elapsed s", "RSS MB", "threads", "descriptors", "predictions", "max gap s", "skipped"]


def sample_rows(result: SoakResult, rows: int = 13) -> list[list[str]]:
    """About `rows` evenly spaced samples (first and last included) as table cells."""
    samples = result.samples
    step = max(1, (len(samples) - 1) // max(1, rows - 1))
    chosen = samples[::step]
    if chosen[-1] is not samples[-1]:
        chosen.append(samples[-1])
    return [
        [
            f"{s.elapsed_s:.0f}",
            f"{s.rss_mb:.1f}",
            str(s.threads),
            str(s.fds),
            str(s.predictions),
            f"{s.max_gap_s:.2f}",
            str(s.skipped),
        ]
        for s in chosen
    ]


def plot_soak(result: SoakResult, path: Path) -> None:
    """RSS, threads and descriptors, and the event gaps over time, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.elapsed_s / 60 for s in result.samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(minutes, [s.rss_mb for s in result.samples], color="tab:blue")
    axes[0].set_ylabel("RSS (MB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(minutes, [s.threads for s in result.samples], label="OS threads")
    axes[1].plot(minutes, [s.fds for s in result.samples], label="open descriptors")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="lower right")
    axes[2].plot(minutes, [s.max_gap_s for s in result.samples], color="tab:red", label="longest event gap")
    axes[2].axhline(MAX_GAP_TARGET_S, color="grey", linestyle="--", label=f"target {MAX_GAP_TARGET_S:g} s")
    axes[2].set_ylabel("seconds")
    axes[2].set_ylim(bottom=0)
    axes[2].legend(loc="upper right")
    axes[2].set_xlabel("minutes")
    fig.suptitle(
        f"soak: {result.seconds:g} s real time, {result.backend}; RSS {result.rss_growth_pct:+.1f} %, "
        f"max gap {result.max_gap_s:.2f} s, {result.skipped} skipped"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def soak_markdown(result: SoakResult, figure: Path | None, relative_to: Path, command: str) -> str:
    """A markdown section: the targets, the sampled table and the curve."""
    lines = [f"## Soak: {result.seconds:g} s in real time", "", f"`{command}`", ""]
    lines += ["| target | required | measured | |", "| --- | --- | --- | --- |"]
    lines += [f"| {t} | {r} | {m} | {'met' if ok else '**missed**'} |" for t, r, m, ok in result.targets()]
    lines += ["", "| " + " | ".join(SAMPLE_HEADER) + " |", "|" + " --- |" * len(SAMPLE_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in sample_rows(result)]
    lines += ["", f"{result.predictions} predictions received, {result.jsonl_lines} lines written to --jsonl."]
    if figure is not None:
        lines += ["", f"![soak curve]({os.path.relpath(figure, relative_to)})"]
    return "\n".join(lines) + "\n"


SOAK_HEADING = "## Soak"


def _soak_span(document: str) -> tuple[int, int] | None:
    """Where the soak section lies: from its heading to the next `## ` heading (or the end)."""
    start = document.find("\n" + SOAK_HEADING)
    if start < 0:
        return None
    end = document.find("\n## ", start + 1)
    return start + 1, end + 1 if end >= 0 else len(document)


def soak_section(document: str) -> str | None:
    """The soak section of a markdown document, if it has one."""
    span = _soak_span(document)
    return document[span[0] : span[1]].rstrip("\n") + "\n" if span else None


def with_soak_section(document: str, section: str) -> str:
    """`document` with its soak section replaced by `section`, or with `section` appended. The full bench
    and the soak each write their own part of docs/benchmarks.md, and neither erases the other's."""
    span = _soak_span(document)
    if span is None:
        return document.rstrip("\n") + "\n\n" + section
    after = document[span[1] :]
    return document[: span[0]] + section.rstrip("\n") + "\n" + ("\n" + after if after else "")
