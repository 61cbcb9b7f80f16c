"""The most identical real-time streams the machine carries without falling behind: trials of N streams
at once, N doubled then bisected, each judged on skipped windows and p95 latency within a hop.

A trial runs in one process, or split over several (one per core, as docs/deployment.md deploys
`streamrec run --shard K/N`): a process's streams share one Python interpreter, whose lock, not the
networks, is what one process runs out of first. Worker processes load the networks once and start each
trial together (a barrier), so their streams' data arrive in the same instant, as in one process.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    networks: Networks,
    bundle: Path | None,
    backend: str,
    clip: Path,
    streams: int,
    seconds: float,
    hop_seconds: float,
    frame_workers: int | None = None,
) -> StreamTrial:
    """`streams` identical real-time file streams started at once for `seconds` of media, in this process;
    `bundle` is the one `networks` came from (its fusion rule and smoothing)."""
    latencies: list[float] = []
    sink = CallbackSink(lambda e: latencies.append(e["latency_ms"]) if e["type"] == "prediction" else None)
    options = RuntimeOptions(
        bundle=bundle, backend=backend, hop_seconds=hop_seconds, duration=seconds, frame_workers=frame_workers
    )
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


def combine_trials(parts: list[StreamTrial]) -> StreamTrial:
    """One trial split over processes, as one: held only if every process held; CPU and peak RSS summed
    (the sum of the processes' peaks: an upper bound on the peak of their sum); batch sizes pooled."""
    streams = sum(p.streams for p in parts)
    latencies = [ms for p in parts for ms in p.latencies_ms]
    cpu = sum(p.cpu_percent for p in parts)
    batches: dict[str, dict[str, float]] = {}
    for kind in {k for p in parts for k in p.batches}:
        calls = sum(p.batches[kind]["calls"] for p in parts if kind in p.batches)
        items = sum(p.batches[kind]["items"] for p in parts if kind in p.batches)
        largest = max(p.batches[kind]["max"] for p in parts if kind in p.batches)
        batches[kind] = {"calls": calls, "items": items, "mean": items / calls, "max": largest}
    return StreamTrial(
        streams,
        all(p.held for p in parts),
        sum(p.skipped for p in parts),
        max(p.latency_p95_ms for p in parts),
        cpu,
        cpu / streams,
        sum(p.rss_mb for p in parts),
        latencies,
        float(np.percentile(latencies, 50)) if latencies else float("nan"),
        batches,
        processes=len(parts),
    )


# A worker process's networks and its trials' starting barrier, set once by _start_worker.
_worker: dict[str, Any] = {}
BARRIER_SECONDS = 120.0  # a worker that never reaches the start (it died) fails the trial instead of hanging it


def _start_worker(bundle: Path, backend: str, triton_url: str | None, barrier: Any) -> None:
    from streamrec.engines import load_networks

    _worker.update(
        networks=load_networks(bundle, backend, threads=1, triton_url=triton_url), bundle=bundle, barrier=barrier
    )


def _worker_trial(
    backend: str, clip: Path, streams: int, seconds: float, hop_seconds: float, frame_workers: int
) -> StreamTrial:
    _worker["barrier"].wait(BARRIER_SECONDS)  # every process starts its streams in the same instant
    return stream_trial(
        _worker["networks"], _worker["bundle"], backend, clip, streams, seconds, hop_seconds, frame_workers
    )


@contextmanager
def trial_runner(
    networks: Networks, bundle: Path, backend: str, processes: int, triton_url: str | None = None
) -> Iterator[Callable[[Path, int, float, float], StreamTrial]]:
    """run(clip, streams, seconds, hop_seconds) -> StreamTrial: in this process with `networks` when
    processes is 1; else split as evenly as possible over `processes` worker processes, each with its
    share of the cores for its frame network (no more compute threads than cores)."""
    if processes == 1:
        yield lambda clip, n, seconds, hop: stream_trial(networks, bundle, backend, clip, n, seconds, hop)
        return
    # spawn, not fork: this process already runs ONNX Runtime's and torch's thread pools.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    frame_workers = max(1, (os.cpu_count() or 1) // processes)
    with ProcessPoolExecutor(processes, context, _start_worker, (bundle, backend, triton_url, barrier)) as pool:

        def run(clip: Path, n: int, seconds: float, hop: float) -> StreamTrial:
            shares = [n // processes + (i < n % processes) for i in range(processes)]
            if min(shares) == 0:
                raise ValueError(f"{n} streams cannot be split over {processes} processes")
            jobs = [pool.submit(_worker_trial, backend, clip, k, seconds, hop, frame_workers) for k in shares]
            return combine_trials([job.result() for job in jobs])

        yield run


def max_realtime_streams(
    networks: Networks,
    bundle: Path,
    backend: str,
    clip: Path,
    o: BenchOptions,
    processes: int = 1,
    progress: Callable[[StreamTrial], None] = lambda t: None,
) -> list[StreamTrial]:
    """Doubles N from o.first_streams until a trial falls behind (or o.max_streams), then bisects
    to within about 10 %; then, unless a trial already had o.rss_streams or more, one trial of o.rss_streams
    for its memory (held or not), in fresh worker processes. Each trial on `processes` processes. Returns
    every trial in the order run."""
    trials: list[StreamTrial] = []

    def trial(run: Callable[[Path, int, float, float], StreamTrial], n: int) -> bool:
        result = run(clip, n, o.trial_seconds, o.hop_seconds)
        trials.append(result)
        progress(result)
        return result.held

    with trial_runner(networks, bundle, backend, processes, o.triton_url) as run:
        search_streams(lambda n: trial(run, n), max(o.first_streams, processes), max(o.max_streams, processes))
    if o.rss_streams and not any(t.streams >= o.rss_streams for t in trials):
        # In fresh worker processes: the search's workers keep the memory of its largest trials.
        with trial_runner(networks, bundle, backend, processes, o.triton_url) as run:
            trial(run, max(o.rss_streams, processes))
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
