"""`streamrec bench`: latency, switch detection, concurrent streams and throughput on this machine."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from streamrec.cli.args import _positive_float, _positive_int, add_model, add_triton_url, console
from streamrec.core.errors import UserError


def register(commands: argparse._SubParsersAction) -> None:
    bn = commands.add_parser(
        "bench",
        help="measure latency, switch detection, concurrent streams and throughput on this machine",
        description="Benchmarks the runtime on this machine with the bundled example clip: per-stage latency "
        "(p50/p95/p99) for each backend side by side, capture-to-emission latency and instrument-switch "
        "detection of a real-time stream watched by a websocket client, the most concurrent real-time "
        "streams carried by one process and by one process per core, offline throughput on a 3-minute "
        "clip, and each network's multiply-adds against the CPU's measured peak. Takes about 6 minutes; "
        "--quick takes seconds "
        "(for a smoke test, not for figures).",
    )
    add_model(bn)
    bn.add_argument(
        "--backends",
        default="torch,onnxruntime",
        metavar="LIST",
        help="backends side by side, comma-separated; the last one runs the live, streams and "
        "offline measurements as the best (default torch,onnxruntime)",
    )
    add_triton_url(bn)
    bn.add_argument("--max-streams", type=_positive_int, metavar="N", help="stop the streams search at N (default 160)")
    bn.add_argument(
        "--processes",
        metavar="LIST",
        help="run the streams search once for each of these process counts, each trial's streams split "
        "evenly over that many processes (comma-separated; default 1 and one per core)",
    )
    bn.add_argument("--quick", action="store_true", help="tiny sizes: seconds instead of minutes")
    bn.add_argument(
        "--soak",
        type=_positive_float,
        metavar="SECONDS",
        help="instead of the benchmark: one real-time stream (the example clip looped) for SECONDS with a "
        "websocket client and a --jsonl file, sampling RSS, threads, descriptors, event gaps and skipped "
        "windows; --json and --markdown then write the soak's figures (and its curve under figures/)",
    )
    bn.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    bn.add_argument(
        "--markdown",
        metavar="FILE",
        help="write a report (e.g. docs/benchmarks.md) and its latency histogram under figures/ beside it",
    )
    bn.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    import json

    from streamrec.bench.report import latency_series, markdown, plot_latency, print_report
    from streamrec.bench.run import BenchOptions, run_bench
    from streamrec.bench.soak import soak_section, with_soak_section

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in backends if b not in ("torch", "onnxruntime", "tensorrt", "triton")]
    if unknown or not backends:
        named = ", ".join(unknown) or "empty list"
        raise UserError(f"--backends: unknown {named}; use torch, onnxruntime, tensorrt, triton (with --triton-url)")
    model = Path(args.model) if args.model else None
    options = BenchOptions.quick(model, backends) if args.quick else BenchOptions(model, backends)
    if args.max_streams:
        options = replace(options, max_streams=args.max_streams)
    if args.processes:
        try:
            counts = tuple(int(n) for n in args.processes.split(","))
        except ValueError:
            counts = ()
        if not counts or min(counts) < 1:
            raise UserError(f"--processes: give process counts of 1 or more, comma-separated, not {args.processes!r}")
        options = replace(options, processes=counts)
    options = replace(options, triton_url=args.triton_url)
    command = "streamrec bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "streamrec bench"
    if args.soak:
        return _soak(args, model, backends[-1], command)
    report = run_bench(options, command, say=lambda line: console.print(line, highlight=False))
    print_report(report, Console())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {path}")
    if args.markdown:
        path = Path(args.markdown)
        histogram = path.parent / "figures" / f"{path.stem}_latency.png"
        plot_latency(latency_series(report), histogram)
        text = markdown(report, histogram, path.parent)
        # The soak's section (bench --soak) is not this run's to erase.
        kept = soak_section(path.read_text(encoding="utf-8")) if path.exists() else None
        path.write_text(with_soak_section(text, kept) if kept else text, encoding="utf-8")
        console.print(f"wrote {path} and {histogram}")
    return 0


def _soak(args: argparse.Namespace, model: Path | None, backend: str, command: str) -> int:
    """`--soak`: exit 0 when every soak target is met, 1 when one is missed (the figures are written either way)."""
    import json

    from rich.table import Table

    from streamrec.bench.soak import SAMPLE_HEADER, plot_soak, sample_rows, soak, soak_markdown, with_soak_section
    from streamrec.engines import load_networks

    console.print(f"soak: {args.soak:g} s in real time ({backend}), one websocket client", highlight=False)
    result = soak(
        load_networks(model, backend, threads=1),
        model,
        backend,
        args.soak,
        progress=lambda s: console.print(
            f"  {s.elapsed_s:6.0f} s: RSS {s.rss_mb:.1f} MB, {s.threads} threads, {s.fds} descriptors, "
            f"{s.predictions} predictions, max gap {s.max_gap_s:.2f} s, {s.skipped} skipped",
            highlight=False,
            soft_wrap=True,
        ),
    )
    table = Table(*SAMPLE_HEADER, title="soak samples")
    for row in sample_rows(result):
        table.add_row(*row)
    console.print(table)
    for target, required, measured, met in result.targets():
        console.print(f"{target}: {measured} (required {required}) {'met' if met else 'MISSED'}", highlight=False)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {path}")
    if args.markdown:
        path = Path(args.markdown)
        figure = path.parent / "figures" / f"{path.stem}_soak.png"
        plot_soak(result, figure)
        section = soak_markdown(result, figure, path.parent, command)
        # Into an existing report (docs/benchmarks.md) as its soak section; the rest is kept.
        path.write_text(
            with_soak_section(path.read_text(encoding="utf-8"), section) if path.exists() else section, encoding="utf-8"
        )
        console.print(f"wrote {path} and {figure}")
    return 0 if all(met for *_, met in result.targets()) else 1
