"""The timing shared by every bench measurement: the round-robin timer, so a passing load on a shared
machine hits every candidate alike, and the percentiles each latency is reported as."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


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
