"""Micro-benchmarks: each network of a bundle on torch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8
(and TensorRT where usable), side by side, plus the audio front end in torch vs inside an ONNX graph.

    python -m streamrec.bench.engines --model DIR [--batch 1,8] [--repeats 30] [--threads 1] [--frontends]

Engines are timed round-robin (one call of each in turn, `repeats` times), so a load that comes and goes
on a shared machine hits them alike; the medians and 95th percentiles still carry that noise.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from streamrec.bench.timing import time_round_robin
from streamrec.core.bundle import KINDS, Bundle
from streamrec.core.features import LOG_OFFSET, LOGMEL_PRESETS, LogMel, LogMelConfig
from streamrec.engines.base import Engine
from streamrec.engines.export import quiet_exporter, representative_inputs, synthetic_waveforms
from streamrec.engines.loader import EngineOptions, load_engine
from streamrec.engines.tensorrt_engine import tensorrt_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchRow:
    """Latency of one engine at one batch size, in milliseconds per call; `speedup` = torch median / this median."""

    kind: str
    batch: int
    backend: str
    precision: str
    median_ms: float
    p95_ms: float
    speedup: float


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _variants() -> list[tuple[str, str]]:
    variants = [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    if tensorrt_status()[0]:
        variants += [("tensorrt", "fp32"), ("tensorrt", "fp16"), ("tensorrt", "int8")]
    return variants


def compare_backends(
    bundle: Bundle | str | Path,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 30,
    threads: int = 1,
    kinds: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> list[BenchRow]:
    """Per network and batch size: torch eager FP32, ONNX Runtime FP32 and INT8 (TensorRT FP32/FP16/INT8 too
    when usable), on representative inputs, all with `threads` CPU threads. Engines are built into the
    bundle's cache (or `cache_dir`) first when missing."""
    loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    options = EngineOptions(threads=threads, cache_dir=cache_dir, device="cpu")
    rows: list[BenchRow] = []
    with _torch_threads(threads):
        for kind in kinds or [k for k in KINDS if loaded.has(k)]:
            engines: dict[tuple[str, str], Engine] = {
                variant: load_engine(loaded, kind, variant[0], variant[1], options) for variant in _variants()
            }
            inputs = representative_inputs(loaded, kind, max(batch_sizes), seed=21)
            try:
                for batch in batch_sizes:
                    feed = {name: value[:batch] for name, value in inputs.items()}
                    calls = {variant: (lambda e=engine, f=feed: e.infer(f)) for variant, engine in engines.items()}
                    times = time_round_robin(calls, repeats)
                    reference = float(np.median(times[("torch", "fp32")]))
                    for (backend, precision), samples in times.items():
                        median = float(np.median(samples))
                        rows.append(
                            BenchRow(
                                kind,
                                batch,
                                backend,
                                precision,
                                median,
                                float(np.percentile(samples, 95)),
                                reference / median,
                            )
                        )
            finally:
                for engine in engines.values():
                    engine.close()
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The audio front end inside an ONNX graph: the alternative streamrec.engines.export measured and did not take.


class ConvLogMel(torch.nn.Module):
    """Waveform (batch, samples) -> log-mel (batch, n_mels, frames) with the STFT as a conv1d of fixed
    Hann-windowed cos/sin kernels (plain Conv/MatMul ops, exportable anywhere), then torchaudio's mel matrix."""

    def __init__(self, config: LogMelConfig) -> None:
        super().__init__()
        n = config.n_fft
        self.n_freqs, self.hop, self.pad = n // 2 + 1, config.hop_length, n // 2
        window = torch.hann_window(n, periodic=True, dtype=torch.float64)
        angle = 2 * torch.pi * torch.arange(self.n_freqs, dtype=torch.float64)[:, None] * torch.arange(n) / n
        kernel = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])
        self.register_buffer("kernel", kernel[:, None, :].float())
        f_max = config.f_max if config.f_max is not None else config.sample_rate / 2
        mel = torchaudio.functional.melscale_fbanks(
            self.n_freqs, config.f_min, f_max, config.n_mels, config.sample_rate, norm=None, mel_scale="htk"
        )
        self.register_buffer("mel", mel.T.contiguous())  # (n_mels, n_freqs)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # Reflect padding of n_fft // 2 on both sides: torch.stft's center=True, as LogMel uses.
        x = torch.nn.functional.pad(waveform.unsqueeze(1), (self.pad, self.pad), mode="reflect")
        spectrum = torch.nn.functional.conv1d(x, self.kernel, stride=self.hop)
        real, imag = spectrum[:, : self.n_freqs], spectrum[:, self.n_freqs :]
        return torch.log(torch.matmul(self.mel, real * real + imag * imag) + LOG_OFFSET)


@dataclass(frozen=True)
class FrontendRow:
    preset: str
    batch: int
    torchaudio_ms: float
    onnx_graph_ms: float
    max_abs_diff: float  # conv front end in ONNX Runtime vs torchaudio, on log-mel


def compare_frontends(
    presets: Sequence[str] = ("realtime", "han"),
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 30,
    workdir: Path | None = None,
) -> list[FrontendRow]:
    """torchaudio's LogMel vs the conv1d front end exported to ONNX and run by ONNX Runtime (1 thread)."""
    import tempfile

    import onnxruntime as ort

    from streamrec.engines.onnxruntime_engine import session_options

    rows = []
    with _torch_threads(1), tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for preset in presets:
            config = LOGMEL_PRESETS[preset]
            reference, conv = LogMel(config).eval(), ConvLogMel(config).eval()
            waves = torch.from_numpy(synthetic_waveforms(max(batch_sizes), config, seed=3))
            path = Path(tmp) / f"{preset}.onnx"
            with quiet_exporter():
                torch.onnx.export(
                    conv,
                    (waves[:2],),
                    str(path),
                    input_names=["waveform"],
                    output_names=["logmel"],
                    dynamic_axes={"waveform": {0: "batch"}, "logmel": {0: "batch"}},
                    dynamo=False,
                    opset_version=18,
                )
            session = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
            for batch in batch_sizes:
                x = waves[:batch].contiguous()
                with torch.no_grad():
                    expected = reference(x).numpy()
                    got = session.run(None, {"waveform": x.numpy()})[0]
                    feed = {"waveform": x.numpy()}
                    times = time_round_robin(
                        {"torch": lambda x=x, m=reference: m(x), "onnx": lambda f=feed, s=session: s.run(None, f)},
                        repeats,
                    )
                rows.append(
                    FrontendRow(
                        preset,
                        batch,
                        float(np.median(times["torch"])),
                        float(np.median(times["onnx"])),
                        float(np.abs(got - expected).max()),
                    )
                )
    return rows


def _print_tables(rows: list[BenchRow], frontend_rows: list[FrontendRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="latency per call (ms): median / p95; speedup = torch median / median")
    for column in ("network", "batch", "backend", "precision", "median", "p95", "speedup"):
        table.add_column(column, justify="left" if column in ("network", "backend", "precision") else "right")
    for r in rows:
        table.add_row(
            r.kind, str(r.batch), r.backend, r.precision, f"{r.median_ms:.2f}", f"{r.p95_ms:.2f}", f"{r.speedup:.2f}x"
        )
    console = Console()
    console.print(table)
    if frontend_rows:
        table = Table(title="audio front end (ms, median): torchaudio vs conv1d STFT inside an ONNX graph")
        for column in ("preset", "batch", "torchaudio", "ONNX graph", "max |diff| log-mel"):
            table.add_column(column, justify="left" if column == "preset" else "right")
        for f in frontend_rows:
            table.add_row(
                f.preset, str(f.batch), f"{f.torchaudio_ms:.3f}", f"{f.onnx_graph_ms:.3f}", f"{f.max_abs_diff:.2g}"
            )
        console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streamrec.bench.engines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="DIR", help="model bundle")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per engine and batch (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and ONNX Runtime (default 1)")
    parser.add_argument("--cache-dir", metavar="DIR", help="engine cache (default: BUNDLE/engines)")
    parser.add_argument("--frontends", action="store_true", help="also time the audio front end in torch vs ONNX")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    batches = tuple(int(b) for b in args.batch.split(","))
    rows = compare_backends(
        args.model, batches, args.repeats, args.threads, cache_dir=Path(args.cache_dir) if args.cache_dir else None
    )
    frontend_rows = compare_frontends(batch_sizes=batches, repeats=args.repeats) if args.frontends else []
    _print_tables(rows, frontend_rows)
    if args.json:
        import json

        Path(args.json).write_text(
            json.dumps(
                {"backends": [asdict(r) for r in rows], "frontends": [asdict(f) for f in frontend_rows]}, indent=2
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
