"""`streamrec bench`: how fast the recognizer runs on this machine, measured through the runtime's own code.

run_bench runs each measurement in turn, each in its own module returning the dataclasses of results.py:
stages (per-stage latency), compute (multiply-adds against the CPU's peak), live (switch detection over
websockets), streams (concurrent real-time streams) and offline (throughput). Everything runs on the
shipped runtime; the test media are cut from the bundled example clip (media.py). Backends are timed
round-robin within one run (timing.py), so compare ratios rather than absolute figures across runs.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from streamrec.bench.compute import compute_budget
from streamrec.bench.live import live_run
from streamrec.bench.media import make_long_clip, make_switch_clip
from streamrec.bench.offline import offline_throughput
from streamrec.bench.results import BenchOptions, BenchReport
from streamrec.bench.stages import stage_latencies
from streamrec.bench.streams import max_realtime_streams
from streamrec.core.assets import EXAMPLE_CLIP
from streamrec.core.bundle import Bundle
from streamrec.core.errors import UserError
from streamrec.engines import load_networks

__all__ = ["BenchOptions", "BenchReport", "describe_machine", "run_bench"]

log = logging.getLogger(__name__)


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
        networks = {b: load_networks(bundle.root, b, threads=1, triton_url=o.triton_url) for b in o.backends}
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
        report.live = live_run(networks[best], bundle.root, best, switch_clip, changes, o.hop_seconds)
        # One process, then one per core (as docs/deployment.md deploys); the memory probe on the last.
        counts = o.processes or tuple(sorted({1, os.cpu_count() or 1}))
        for i, processes in enumerate(counts):
            say(
                f"streams: {o.trial_seconds:g} s trials from {o.first_streams} streams up, "
                f"{processes} process(es) ({best})"
            )
            report.trials += max_realtime_streams(
                networks[best],
                bundle.root,
                best,
                EXAMPLE_CLIP,
                o if i == len(counts) - 1 else replace(o, rss_streams=0),
                processes,
                lambda t: say(
                    f"  {t.streams} streams in {t.processes} process(es): {'held' if t.held else 'fell behind'}, "
                    f"worst p95 {t.latency_p95_ms:.0f} ms, {t.skipped} skipped, {t.cpu_percent:.0f}% CPU"
                ),
            )
        for backend in o.backends:
            say(f"offline: {o.offline_seconds:g} s as fast as possible ({backend})")
            report.offline.append(
                offline_throughput(networks[backend], bundle.root, backend, long_clip, o.offline_seconds)
            )
    return report
