"""Offline throughput: a long clip through the runtime as fast as it goes (`streamrec run --fast`), in
multiples of real time, per backend."""

from __future__ import annotations

import time
from pathlib import Path

from streamrec.bench.results import OfflineResult
from streamrec.core.assets import EXAMPLE_CLIP
from streamrec.core.networks import Networks
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sources import SourceSpec


def offline_throughput(
    networks: Networks, bundle: Path | None, backend: str, clip: Path, media_seconds: float, runs: int = 2
) -> OfflineResult:
    """The clip through the runtime as fast as it goes (`streamrec run --fast`); best of `runs` after a
    warm-up on the example clip. `bundle`: the one `networks` came from."""

    def once(path: Path) -> tuple[float, float, int]:
        runtime = Runtime(
            [SourceSpec("file", str(path), "offline", False)],
            RuntimeOptions(bundle=bundle, backend=backend),
            networks=networks,
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = runtime.run()
        return time.perf_counter() - wall0, time.process_time() - cpu0, summary.streams["offline"].updates

    once(EXAMPLE_CLIP)
    wall, cpu, updates = min(once(clip) for _ in range(runs))
    return OfflineResult(backend, media_seconds, wall, cpu, media_seconds / wall, updates)
