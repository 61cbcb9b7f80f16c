"""Seed 003's comparison on a corpus: the attention model over several representations.

    python -m streamrec.train.seed003 pretrain DATA OUT.pt --objective gaussian|bernoulli|classification
    streamrec train audio --arch attention --representation logmel|embedding [--embedding OUT.pt] ...
    python -m streamrec.train.seed003 report RUNS --figures docs/figures

`pretrain` writes an embedding checkpoint for `streamrec train audio --embedding`. `report` writes
the Markdown table and the two figures of Taenzer et al. (Figures 2 and 3): F1 per class, one bar
per representation, and a box plot over classes. scripts/seed003_experiments.sh runs the whole study.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.core.bundle import Bundle
from streamrec.core.errors import UserError
from streamrec.train.loop import FitOptions
from streamrec.train.pretrain import OBJECTIVES, PretrainOptions, pretrain_embedding

# matplotlib is imported where a figure is drawn: slow to import, and only figures need it.


@dataclass(frozen=True)
class Row:
    """One representation of the study: its run directory under RUNS and how the figures name it."""

    run: str
    label: str
    pretraining: str | None  # objective, or None when nothing is pre-trained


# The study's runs, in the order of the table and the bars.
ROWS = (
    Row("logmel", "Log-Mel", None),
    Row("random", "CNN, random", None),
    Row("denoise-gaussian", "CNN, Den +", "gaussian"),
    Row("denoise-bernoulli", "CNN, Den \u2299", "bernoulli"),
    Row("classification", "CNN, classification", "classification"),
)


def load_row(runs: Path, row: Row) -> dict | None:
    """Test metrics and training times of one run, or None when it has not been run."""
    path = runs / row.run
    if not (path / "manifest.json").exists():
        return None
    bundle = Bundle.load(path)
    entry = bundle.network("audio")
    test, training = entry["metrics"]["test"], entry["training"]
    pretrain_minutes = 0.0
    if row.pretraining is not None:
        summary = json.loads((runs / "pretrain" / f"{row.pretraining}.json").read_text())
        pretrain_minutes = summary["train_seconds"] / 60
    return {
        "row": row,
        "classes": bundle.classes,
        "test": test,
        "per_class": [np.nan if f is None else f for f in test["per_class_f1_pos_neg"]],
        "epochs": training["epochs"],
        "best_epoch": training["best_epoch"],
        "minutes": training["train_seconds"] / 60,
        "pretrain_minutes": pretrain_minutes,
    }


def markdown_tables(results: list[dict]) -> str:
    """The overall table and the per-class table (seed 003's per-instrument F1-macro)."""
    lines = [
        "| representation | F1-macro (seed 003) | F1 (argmax) | F1@0.5 multi-label | mAP | Hit@1 | epochs (best) "
        "| pre-training min | attention min |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        t = r["test"]
        pre = f"{r['pretrain_minutes']:.1f}" if r["row"].pretraining else "-"
        lines.append(
            f"| {r['row'].label} | {t['f1_pos_neg']:.3f} | {t['f1_macro']:.3f} | {t['f1_macro_at_0.5']:.3f} | "
            f"{t['map']:.3f} | {t['hit1']:.3f} | {r['epochs']} ({r['best_epoch']}) | {pre} | {r['minutes']:.1f} |"
        )
    classes = results[0]["classes"]
    lines += ["", "| representation | " + " | ".join(classes) + " |", "| --- |" + " ---: |" * len(classes)]
    for r in results:
        lines.append(f"| {r['row'].label} | " + " | ".join(f"{f:.2f}" for f in r["per_class"]) + " |")
    return "\n".join(lines)


def plot_figures(results: list[dict], out: Path) -> list[Path]:
    """Seed 003's Figures 2/3 in one: per-class F1-macro bars (one per representation) beside a box
    plot of the per-class values, the overall F1-macro marked on each box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = results[0]["classes"]
    colours = plt.get_cmap("tab10").colors
    fig, (bars, boxes) = plt.subplots(
        1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [4, 1.3]}, constrained_layout=True
    )
    width = 0.8 / len(results)
    x = np.arange(len(classes))
    for i, r in enumerate(results):
        bars.bar(
            x + (i - (len(results) - 1) / 2) * width, r["per_class"], width, color=colours[i], label=r["row"].label
        )
    lowest = min(np.nanmin(r["per_class"]) for r in results)
    floor = max(0.0, np.floor(lowest * 10) / 10 - 0.05)  # zoom in: the interesting part is near the top
    bars.set_ylim(floor, 1.0)
    bars.set_xticks(x, classes, rotation=45, ha="right", fontsize=8)
    bars.set_ylabel("F1-macro per instrument (test)", fontsize=9)
    bars.legend(fontsize=7, ncol=len(results), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    data = [np.array(r["per_class"])[~np.isnan(r["per_class"])] for r in results]
    plot = boxes.boxplot(data, patch_artist=True, widths=0.6, medianprops={"color": "black"})
    for patch, colour in zip(plot["boxes"], colours):
        patch.set_facecolor(colour)
    boxes.scatter(range(1, len(results) + 1), [r["test"]["f1_pos_neg"] for r in results], color="black", zorder=3, s=12)
    boxes.set_xticks(range(1, len(results) + 1), [r["row"].label for r in results], rotation=45, ha="right", fontsize=7)
    boxes.set_ylim(floor, 1.0)
    boxes.set_title("over instruments (line: median, dot: mean)", fontsize=8)
    path = out / "seed003_f1_per_class.png"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def report(runs: Path, figures: Path) -> str:
    results = [r for r in (load_row(runs, row) for row in ROWS) if r is not None]
    if not results:
        raise UserError(f"{runs}: no seed 003 runs found (expected {', '.join(r.run for r in ROWS)})")
    plot_figures(results, figures)
    return markdown_tables(results)


def _fit_options(args: argparse.Namespace) -> FitOptions:
    return FitOptions(
        max_epochs=args.epochs,
        patience=args.patience,
        learning_rate=args.lr,
        max_minutes=args.max_minutes,
        seed=args.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streamrec.train.seed003", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("pretrain", help="pre-train the embedding CNN with one of seed 003's objectives")
    p.add_argument("data", type=Path, help="dataset directory (labels.csv + clips)")
    p.add_argument("--epochs", type=int, default=50, help="maximum epochs (default 50)")
    p.add_argument("--patience", type=int, default=5, help="early stopping (default 5, as the seed)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, as the seed)")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--max-minutes", type=float, help="stop after this much training time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("out", type=Path, help="embedding checkpoint to write (.pt; a .json summary beside it)")
    p.add_argument("--objective", choices=OBJECTIVES, required=True)

    r = commands.add_parser("report", help="table (Markdown, stdout) and figures of the runs under RUNS")
    r.add_argument("runs", type=Path)
    r.add_argument("--figures", type=Path, default=Path("docs/figures"))
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pretrain":
            options = PretrainOptions(
                args.data, args.out, args.objective, _fit_options(args), args.batch_size, workers=args.workers
            )
            summary = pretrain_embedding(options)
            print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
        else:
            print(report(args.runs, args.figures))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
