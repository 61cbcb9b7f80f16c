"""Renders a BenchReport (results.py): rich tables on the terminal, docs/benchmarks.md and a latency histogram."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from streamrec.bench.results import BenchReport
from streamrec.bench.timing import Percentiles

STREAM_HEADER = [
    "processes",
    "streams",
    "kept real time",
    "skipped windows",
    "p50 ms",
    "worst p95 ms",
    "CPU % of one core",
    "CPU % per stream",
    "peak RSS MB",
    "mean batch: updates / frames",
]
COMPUTE_HEADER = [
    "network",
    "M mult-adds / call",
    "calls / s of media",
    "M mult-adds / s of media",
    "ms / call",
    "G mult-adds/s reached",
    "share of 1-thread peak",
]


def _ms(p: Percentiles, digits: int = 2) -> list[str]:
    return [f"{p.p50:.{digits}f}", f"{p.p95:.{digits}f}", f"{p.p99:.{digits}f}"]


def _mean_batches(batches: dict[str, dict[str, float]]) -> str:
    return " / ".join(f"{batches[k]['mean']:.1f}" if k in batches else "-" for k in ("updates", "frames"))


def _met(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def tables(report: BenchReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the terminal and the markdown."""
    out = []
    out.append(
        (
            "Targets",
            ["target", "required", "measured", ""],
            [[name, required, measured, _met(met)] for name, required, measured, met in report.targets()],
        )
    )
    out.append(
        (
            "Stages, batch 1, one thread per network (ms per call)",
            ["stage", "backend", "one call is", "p50", "p95", "p99"],
            [[r.stage, r.backend, r.unit, *_ms(r.ms, 3)] for r in report.stages],
        )
    )
    if report.live:
        live = report.live
        out.append(
            (
                f"Live: one real-time stream, {live.media_seconds:g} s, {live.updates} updates ({live.backend})",
                ["measure", "p50", "p95", "p99", "n"],
                [
                    ["capture to emission (ms)", *_ms(live.capture_to_emission_ms, 1), str(live.updates)],
                    ["capture to websocket client (ms)", *_ms(live.capture_to_client_ms, 1), str(live.updates)],
                    [
                        f"instrument change to new class active (s); missed {live.missed}",
                        *_ms(live.switch, 2),
                        str(live.switch.n),
                    ],
                ],
            )
        )
    if report.trials:
        out.append(
            (
                "Concurrent real-time streams (identical, started together): the scaling curve",
                STREAM_HEADER,
                [
                    [
                        str(t.processes),
                        str(t.streams),
                        "yes" if t.held else "no",
                        str(t.skipped),
                        f"{t.latency_p50_ms:.0f}",
                        f"{t.latency_p95_ms:.0f}",
                        f"{t.cpu_percent:.0f}",
                        f"{t.cpu_per_stream_percent:.2f}",
                        f"{t.rss_mb:.0f}",
                        _mean_batches(t.batches),
                    ]
                    for t in sorted(report.trials, key=lambda t: (t.processes, t.streams))
                ],
            )
        )
    if report.offline:
        out.append(
            (
                "Offline (as fast as possible)",
                ["backend", "media s", "wall s", "CPU s", "x real time", "updates"],
                [
                    [
                        o.backend,
                        f"{o.media_seconds:g}",
                        f"{o.wall_seconds:.2f}",
                        f"{o.cpu_seconds:.2f}",
                        f"{o.x_realtime:.0f}x",
                        str(o.updates),
                    ]
                    for o in report.offline
                ],
            )
        )
    if report.compute:
        c = report.compute
        out.append(
            (
                f"Compute against the peak (one thread {c.peak_gmacs_one_thread:.1f}, "
                f"{c.threads} threads {c.peak_gmacs_all_threads:.1f} G multiply-adds/s)",
                COMPUTE_HEADER,
                [
                    [
                        r.network,
                        f"{r.macs_per_call / 1e6:.1f}",
                        f"{r.calls_per_media_second:g}",
                        f"{r.macs_per_media_second / 1e6:.1f}",
                        f"{r.ms_per_call:.3f}",
                        f"{r.achieved_gmacs:.1f}",
                        f"{100 * r.share_of_peak:.0f}%",
                    ]
                    for r in c.rows
                ]
                + [["all, per stream", "", "", f"{c.macs_per_stream_second / 1e6:.1f}", "", "", ""]],
            )
        )
    return out


def print_report(report: BenchReport, console: Console) -> None:
    for title, header, rows in tables(report):
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(header):
            table.add_column(column, justify="left" if i == 0 or column in ("backend", "one call is") else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def latency_series(report: BenchReport) -> list[tuple[str, list[float]]]:
    """What the histogram shows: the single live stream, and the largest concurrent trial that kept real time."""
    series = []
    if report.live:
        series.append((f"1 real-time stream ({report.live.backend})", report.live.latencies_ms))
    best = report.best_streams
    if best and best.latencies_ms:
        series.append((f"{best.streams} concurrent streams", best.latencies_ms))
    return series


def plot_latency(series: list[tuple[str, list[float]]], path: Path) -> None:
    """Histograms of capture-to-emission latency, one panel per (label, milliseconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(5.5 * max(1, len(series)), 3.6), squeeze=False)
    for ax, (label, values) in zip(axes[0], series):
        ax.hist(values, bins=50, color="#3b6ea5")
        p = Percentiles.of(values)
        for q, name, style in ((p.p50, "p50", "-"), (p.p95, "p95", "--"), (p.p99, "p99", ":")):
            ax.axvline(q, color="#c0392b", linestyle=style, linewidth=1.2, label=f"{name} {q:.1f} ms")
        ax.legend(fontsize=8, frameon=False)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("capture to emission (ms)")
        ax.set_ylabel("updates")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: BenchReport, histogram: Path | None, relative_to: Path) -> str:
    lines = ["# Benchmarks", "", "Written by `streamrec bench`; do not edit by hand, run it again:", ""]
    lines += [f"    {report.command}", "", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in report.machine.items()]
    lines += [
        "",
        "Shared and noisy: backends are compared round-robin within one run, so ratios are more trustworthy",
        "than absolute figures. Each network call runs on one intra-op thread, as in the live runtime: updates",
        "of all streams are batched into one call per network on the inference thread, frames on frame workers",
        "(one per core, a few frames per call). Engine micro-benchmarks at other batch sizes and precisions,",
        "and the backends' accuracy parity, are in [engines.md](engines.md).",
        "",
    ]
    for title, header, rows in tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
        lines.append("")
    if histogram is not None:
        rel = os.path.relpath(histogram, relative_to)
        lines += ["## Latency distribution", "", f"![capture-to-emission latency]({rel})", ""]
    lines += _definitions(report)
    return "\n".join(lines) + "\n"


def _definitions(report: BenchReport) -> list[str]:
    o = report.options
    return [
        "## What is measured",
        "",
        "- **Stages**: each stage of one update called alone on real inputs cut from the example clip, "
        f"{o['repeats']} timed calls after 3 warm-up calls. Decode = one demuxed packet decoded, downmixed, "
        "resampled and (video) preprocessed as the file source does it. The update row is the whole recognizer "
        "(audio network, fusion inputs, fusion) with the frames already embedded, as a live update finds them.",
        "- **Live**: a clip cut from the example clip with ffmpeg, "
        f"{o['pieces']} pieces of {o['piece_seconds']:g} s whose instrument changes at known media times, "
        f"played in real time through the runtime (hop {o['hop_seconds']:g} s) and its websocket server to a "
        "websocket client. Capture to emission = the `latency_ms` of each prediction event: from the moment "
        "the newest sample or frame the update used was released by the source, to the event. A change "
        "counts as detected when the first event of its piece lists the new class as active; switch time = "
        "the client's receipt of that event minus the wall time at which the source released the change.",
        f"- **Streams**: N copies of the example clip as real-time file streams for "
        f"{o['trial_seconds']:g} s of media, all started together (their audio windows complete in the same "
        "instant: the worst case for latency; the runtime takes their frames at spread phases), in one process, "
        "then split evenly over one process per core (as "
        "docs/deployment.md deploys `streamrec run --shard K/N`; each process's frame workers get its share "
        "of the cores, and a barrier starts the processes together). N doubles until a trial falls behind, "
        "then is bisected; then, split over the most processes, one trial "
        f"of {o.get('rss_streams', 0)} streams for its memory (in fresh worker processes) unless one had as many. "
        "Streams held = the most "
        "that held below every N that fell behind on as many processes. A trial keeps "
        "real time when every stream ends normally with no window skipped or overwritten and its p95 "
        "capture-to-emission latency stays within one hop. CPU is CPU time over wall time, and peak RSS the "
        "peak resident memory, summed over the processes; mean batch = updates (audio windows) and frames per "
        "batched network call.",
        f"- **Offline**: the example clip looped to {o['offline_seconds']:g} s, run as `streamrec run --fast` "
        "runs it (every window evaluated), best of 2 after a warm-up.",
        "- **Compute**: multiply-adds per call counted by torch's FLOP counter on the bundle's modules (the "
        "log-mel FFT is not counted), per second of media at 1/hop audio updates and the frame rate; the peak "
        "is a 2048 x 2048 float32 matrix product in torch, best of 5, on one thread and on all cores. "
        "'Streams at peak' would be the whole CPU at the matrix-product rate: an upper bound no real network "
        f"reaches (here {report.compute.streams_at_peak:.0f}). It is the multiply-add limit the targets compare "
        "the streams held and the offline speed (x real time) with."
        if report.compute
        else "",
        "",
    ]
