"""`streamrec eval` and `streamrec analyze`: a model bundle measured and explained on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from streamrec.cli.args import _positive_int, add_model, add_triton_url, add_workers, console


def register(commands: argparse._SubParsersAction) -> None:
    _add_eval(commands)
    _add_analyze(commands)


def _add_eval(commands: argparse._SubParsersAction) -> None:
    e = commands.add_parser(
        "eval",
        help="evaluate a model bundle on a dataset: Hit@1, Hit@3, F1 per modality",
        description="Evaluates the audio-only, frame-only and fused predictions of a model bundle on a dataset in "
        "the streamrec layout (labels.csv + media). Clips lacking a modality count for the others; fusion "
        "uses whatever each clip has. Writes the eval JSON and a figure of the confusion matrices. When the "
        "dataset has timelines.json (long clips with instrument changes and silence/speech/noise, as "
        "`streamrec data field-dev` writes), each long clip also runs through the live runtime and is scored "
        "as a user would see it: wrong classes active during music, any class active during background, "
        "switch times (docs/results.md).",
    )
    e.add_argument("dataset", metavar="DATASET", help="dataset directory (labels.csv + clips)")
    add_model(e)
    e.add_argument("--split", default="test", help="split(s) to evaluate, comma-separated (default test)")
    e.add_argument(
        "--modality", default="audio,video,fusion", help="comma-separated: audio, video, fusion (default all)"
    )
    e.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "tensorrt", "triton"),
        help="inference backend (default torch, the reference)",
    )
    add_triton_url(e)
    e.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="engine precision (default fp32); INT8 (onnxruntime) only where qualified for this CPU (docs/engines.md)",
    )
    e.add_argument("--json", metavar="FILE", help="write the eval JSON here (and FILE.png with the confusion matrices)")
    e.add_argument("--plot", metavar="FILE", help="write the confusion matrices here (PNG)")
    add_workers(e)
    e.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    import json

    from rich.table import Table

    from streamrec.train.evaluate import evaluate, json_safe

    json_path = Path(args.json) if args.json else None
    plot = Path(args.plot) if args.plot else (json_path.with_suffix(".png") if json_path else None)
    modalities = tuple(m.strip() for m in args.modality.split(",") if m.strip())
    result = evaluate(
        Path(args.dataset),
        Path(args.model) if args.model else None,
        args.split,
        modalities,
        args.backend,
        args.workers,
        plot,
        triton_url=args.triton_url,
        precision=args.precision,
    )
    table = Table(title=f"{result['model']} on {result['dataset']} ({result['split']}, {result['backend']})")
    for column in ("modality", "clips", "Hit@1", "Hit@3", "F1 macro"):
        table.add_column(column, justify="right" if column != "modality" else "left")
    number = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731  (None: no clip has that modality)
    for m in modalities:
        r = result[m]
        table.add_row(m, str(r["n"]), number(r["hit1"]), number(r["hit3"]), number(r["f1_macro"]))
    Console().print(table)
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    model = Path(args.model) if args.model else None
    timelines = _score_timelines(Path(args.dataset), model, args.backend, splits, args.triton_url, args.precision)
    if timelines is not None:
        result["timelines"] = timelines
    if result["skipped"]:
        console.print(f"skipped {len(result['skipped'])} rows (reasons in the log above and in the JSON)")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        # allow_nan=False: the file is strict JSON (json_safe wrote null for what is not a number)
        json_path.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        console.print(f"wrote {json_path}" + (f" and {plot}" if plot else ""))
    return 0


def _score_timelines(
    dataset: Path,
    model: Path | None,
    backend: str,
    splits: list[str],
    triton_url: str | None = None,
    precision: str = "fp32",
) -> dict | None:
    """The dataset's long clips through the runtime, scored against their timelines (None without any)."""
    # imported here: CLI start-up time
    from streamrec.engines import load_networks
    from streamrec.runtime.options import RuntimeOptions
    from streamrec.runtime.replay import replay
    from streamrec.train.timeline import combine, load_timelines, score_timeline

    timelines = load_timelines(dataset, splits)
    if not timelines:
        return None
    networks = load_networks(model, backend, precision=precision, triton_url=triton_url)
    scores = []
    for timeline in timelines:
        events = replay(dataset / timeline.clip, RuntimeOptions(bundle=model, backend=backend), networks)
        scores.append(score_timeline(timeline, [(e["t"], e["active"]) for e in events]))
    overall = combine(scores).summary()
    share = lambda x: "-" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    median = overall["switch_median_seconds"]
    console.print(
        f"long clips ({len(timelines)}): wrong class active in {share(overall['wrong_share'])} of music updates, "
        f"a class active in {share(overall['background_share'])} of background updates, "
        f"switch median {'-' if median is None else f'{median:.2f} s'}, "
        f"{overall['missed']} of {overall['changes']} instruments missed"
    )
    return {
        "overall": overall,
        "clips": [{"clip": t.clip, **s.summary()} for t, s in zip(timelines, scores)],
    }


def _add_analyze(commands: argparse._SubParsersAction) -> None:
    an = commands.add_parser(
        "analyze",
        help="what the fusion network's audio and visual features mean: importance, correlations, t-SNE, Grad-CAM",
        description="Seed 004's representation analysis of a model bundle on a dataset split (clips with both "
        "modalities): per-class feature importance of the audio and frame embeddings (gradient x input of the "
        "fused logit), Spearman cross-correlations of each class's top audio and visual features with mean |rho| "
        "per block (intra- vs inter-modal), a t-SNE of the embeddings, and Grad-CAM overlays of test frames. "
        "Writes OUT/index.html, OUT/analysis.json and PNG figures. --compare adds other bundles (e.g. the other "
        "fusion training scheme) to the correlation study.",
    )
    add_model(an)
    an.add_argument("--data", required=True, metavar="DIR", help="dataset directory (labels.csv + clips)")
    an.add_argument("--out", required=True, metavar="DIR", help="report directory to write (created)")
    an.add_argument(
        "--compare",
        action="append",
        metavar="DIR",
        help="another bundle with the same classes to set beside the model (repeatable)",
    )
    an.add_argument("--split", default="test", help="split(s) to analyse, comma-separated (default test)")
    an.add_argument(
        "--top-audio",
        type=_positive_int,
        default=10,
        metavar="N",
        help="audio features per class (default 10, as seed 004)",
    )
    an.add_argument(
        "--top-visual",
        type=_positive_int,
        default=20,
        metavar="N",
        help="visual features per class (default 20, as seed 004)",
    )
    an.add_argument(
        "--frames-per-class",
        type=_positive_int,
        default=2,
        metavar="N",
        help="Grad-CAM overlays written per class (default 2)",
    )
    add_workers(an)
    an.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    from streamrec.train.analyze import AnalyzeOptions, analyze

    options = AnalyzeOptions(
        data=Path(args.data),
        out=Path(args.out),
        model=Path(args.model) if args.model else None,
        compare=tuple(Path(p) for p in args.compare or ()),
        split=args.split,
        top_audio=args.top_audio,
        top_visual=args.top_visual,
        frames_per_class=args.frames_per_class,
        workers=args.workers,
    )
    result = analyze(options)
    for name, entry in zip(result["figures"]["names"], result["bundles"]):
        s = entry["summary"]
        console.print(
            f"{name}: mean |rho| audio-audio {s['audio_audio']:.2f}, visual-visual {s['visual_visual']:.2f}, "
            f"audio-visual {s['audio_visual']:.2f} (shuffled pairing {s['audio_visual_shuffled']:.2f}) "
            f"over {s['classes']} classes, {entry['clips']} clips",
            highlight=False,
        )
    console.print(f"wrote {options.out / 'index.html'}, analysis.json and the figures")
    return 0
