"""Each network's multiply-adds per second of media against this CPU's measured peak: how much of the
hardware the stage latencies use, and an upper bound on the streams the whole CPU could carry."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from streamrec.bench.results import ComputeResult, ComputeRow, StageRow
from streamrec.core.bundle import Bundle
from streamrec.core.networks import NetworkInfo
from streamrec.core.scores import FusionRule


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
    from streamrec.core.models.tagger import N_MELS, mel_frames
    from streamrec.train.report import multiply_adds

    info = NetworkInfo.from_bundle(bundle)
    rows = []
    if info.has_audio:
        setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
        frames = 1 + info.window_samples // setup.frontend.hop_length
        example = torch.randn(1, setup.frontend.n_mels, frames)
        rows.append(("audio network", multiply_adds(load_network(bundle, "audio").eval(), example), 1 / hop_seconds))
    if info.has_tagger and FusionRule.from_manifest(bundle.manifest, info.has_fusion).tagger_share > 0:
        example = torch.randn(1, mel_frames(info.window_samples), N_MELS)
        rows.append(("tagger", multiply_adds(load_network(bundle, "tagger").eval(), example), 1 / hop_seconds))
    if info.has_video:
        size = info.frames.crop
        example = torch.randn(1, 3, size, size)
        rows.append(("frame network", multiply_adds(load_network(bundle, "video").eval(), example), info.frames.fps))
    # The fusion network is called only where the bundle fuses with it (not with the product of experts).
    if info.has_fusion and FusionRule.from_manifest(bundle.manifest, info.has_fusion).kind == "network":
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
