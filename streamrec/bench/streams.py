"""The most identical real-time streams one process carries without falling behind: trials of N streams
at once, N doubled then bisected, each judged on skipped windows and p95 latency within a hop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamrec.bench.results import BenchOptions, StreamTrial
from streamrec.core.networks import Networks
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import SourceSpec


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
    p50 = float(np.percentile(latencies, 50)) if latencies else float("nan")
    return StreamTrial(
        streams, held, skipped, worst_p95, cpu_percent, cpu_percent / streams, peak[0], latencies, p50, summary.batches
    )


def max_realtime_streams(
    networks: Networks,
    backend: str,
    clip: Path,
    o: BenchOptions,
    progress: Callable[[StreamTrial], None] = lambda t: None,
) -> list[StreamTrial]:
    """Doubles N from o.first_streams until a trial falls behind (or o.max_streams), then bisects
    to within about 10 %; then, unless a trial already had o.rss_streams or more, one trial of o.rss_streams
    for its memory (held or not). Returns every trial in the order run."""
    trials: list[StreamTrial] = []

    def trial(n: int) -> bool:
        result = stream_trial(networks, backend, clip, n, o.trial_seconds, o.hop_seconds)
        trials.append(result)
        progress(result)
        return result.held

    search_streams(trial, o.first_streams, o.max_streams)
    if o.rss_streams and not any(t.streams >= o.rss_streams for t in trials):
        trial(o.rss_streams)
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
