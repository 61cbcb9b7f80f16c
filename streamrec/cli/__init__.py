"""The `streamrec` command: argument parsing and exit codes (2 for bad input, 1 for internal failure).

This is the only module that calls sys.exit. Commands import their implementation lazily so that
`streamrec --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from streamrec import __version__
from streamrec.core.classes import DEFAULT_CLASSES, parse_class_list
from streamrec.core.errors import UserError

log = logging.getLogger("streamrec")

# The real-time default audio network: Han et al.'s layout at a quarter of its widths, on 1 s windows
# of the real-time front end (docs/results.md gives the comparison behind this choice).
REALTIME_CHANNELS = (16, 32, 64, 128)
REALTIME_EMBEDDING = 256
console = Console(stderr=True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def cmd_data_build(args: argparse.Namespace) -> int:
    from streamrec.train.corpus.build import BuildOptions, build

    try:
        classes = parse_class_list(args.classes) if args.classes else DEFAULT_CLASSES
    except ValueError as e:
        raise UserError(f"--classes: {e}") from e
    if args.seconds < 3:
        raise UserError(f"--seconds must be at least 3 (one model window plus context), got {args.seconds:g}")
    options = BuildOptions(
        out=Path(args.out),
        clips_per_class=args.clips_per_class,
        seconds=args.seconds,
        classes=classes,
        seed=args.seed,
        workers=args.workers,
        preview=args.preview,
    )
    plans = build(options, console=console)
    console.print(
        f"[green]wrote {len(plans)} clips[/green] to {options.out} (labels.csv, README.md"
        + (", preview_frames.png, preview_logmel.png" if args.preview else "")
        + ")"
    )
    return 0


def cmd_data_example(args: argparse.Namespace) -> int:
    from streamrec.train.corpus.example import build_example

    try:
        sequence = tuple(c.strip() for c in args.classes.split(",") if c.strip())
        parse_class_list(",".join(sequence))  # validates the names
    except ValueError as e:
        raise UserError(f"--classes: {e}") from e
    out = Path(args.out)
    if out.suffix != ".mp4":
        raise UserError(f"the example clip is an .mp4 file, got {out}")
    with console.status("rendering the example clip"):
        description = build_example(out, sequence, args.seconds, args.seed)
    console.print(f"wrote {out} ({description['seconds']:g} s: {', '.join(sequence)}) and {out.with_suffix('.json')}")
    return 0


def cmd_data_sources(args: argparse.Namespace) -> int:
    from streamrec.train.corpus import sources

    if args.fetch:
        with console.status("fetching emoji artwork from the npm registry"):
            counts = sources.fetch_emoji()
        console.print("emoji glyphs per style: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    problems = sources.check_sources()
    for name, licence in sources.LICENCES.items():
        console.print(f"  {name}: {licence}")
    if problems:
        raise UserError("; ".join(problems))
    console.print("[green]all training sources present[/green]")
    return 0


def cmd_train_audio(args: argparse.Namespace) -> int:
    from streamrec.core.audio_setup import make_setup
    from streamrec.train.loop import FitOptions
    from streamrec.train.train_audio import AudioTrainOptions, train_audio

    try:
        setup = make_setup(args.arch, args.crop, args.frontend, args.window, background=args.background)
    except ValueError as e:
        raise UserError(str(e)) from e
    fit = FitOptions(
        max_epochs=args.epochs,
        patience=args.patience,
        learning_rate=args.lr,
        max_minutes=args.max_minutes,
        seed=args.seed,
    )
    options = AudioTrainOptions(
        data=Path(args.data),
        out=Path(args.out),
        setup=setup,
        fit=fit,
        batch_size=args.batch_size,
        crops_per_clip=args.crops_per_clip,
        specaugment=args.specaugment,
        resume=args.resume,
        workers=args.workers,
        channels=args.channels,
        embedding_dim=args.embedding_dim,
        representation=args.representation,
        embedding=Path(args.embedding) if args.embedding else None,
    )
    summary = train_audio(options)
    test = summary["test"]
    console.print(
        f"[green]audio {summary['setup']}[/green]: test Hit@1 {test['hit1']:.3f}  Hit@3 {test['hit3']:.3f}  "
        f"F1 {test['f1_macro']:.3f} on {test['n']} clips; bundle {args.out}"
    )
    return 0


def _fit_options(args: argparse.Namespace, patience: int | None = None):
    from streamrec.train.loop import FitOptions

    return FitOptions(
        max_epochs=args.epochs,
        patience=patience or args.patience,
        learning_rate=args.lr,
        max_minutes=args.max_minutes,
        seed=args.seed,
    )


def cmd_train_video(args: argparse.Namespace) -> int:
    from streamrec.train.train_video import VideoTrainOptions, train_video

    options = VideoTrainOptions(
        data=Path(args.data),
        out=Path(args.out),
        backbone=args.backbone,
        pretrained=not args.no_pretrained,
        k_frames=args.k,
        fit=_fit_options(args),
        batch_size=args.batch_size,
        workers=args.workers,
        weights_file=Path(args.weights) if args.weights else None,
    )
    _print_summary("video", train_video(options), args.out)
    return 0


def cmd_train_fusion(args: argparse.Namespace) -> int:
    from streamrec.train.train_fusion import FusionTrainOptions, train_fusion

    options = FusionTrainOptions(
        bundle=Path(args.out),
        data=Path(args.data),
        scheme=args.scheme,
        k_frames=args.k,
        fit=_fit_options(args),
        batch_size=args.batch_size,
        workers=args.workers,
    )
    _print_summary("fusion", train_fusion(options), args.out)
    return 0


def cmd_train_all(args: argparse.Namespace) -> int:
    """The default bundle's recipe: real-time audio network, EfficientNet-Lite0 frames, joint late fusion."""
    from streamrec.core.audio_setup import make_setup
    from streamrec.train.train_audio import AudioTrainOptions, train_audio
    from streamrec.train.train_fusion import FusionTrainOptions, train_fusion
    from streamrec.train.train_video import VideoTrainOptions, train_video

    data, out = Path(args.data), Path(args.out)
    audio = AudioTrainOptions(
        data=data,
        out=out,
        setup=make_setup("han", frontend="realtime", background=True),
        fit=_fit_options(args),
        channels=REALTIME_CHANNELS,
        embedding_dim=REALTIME_EMBEDDING,
        workers=args.workers,
    )
    _print_summary("audio", train_audio(audio), out)
    video = VideoTrainOptions(data=data, out=out, k_frames=10, fit=_fit_options(args, patience=5), workers=args.workers)
    _print_summary("video", train_video(video), out)
    fusion = FusionTrainOptions(
        bundle=out, data=data, scheme=args.scheme, fit=_fit_options(args, patience=8), workers=args.workers
    )
    _print_summary("fusion", train_fusion(fusion), out)
    return 0


def _print_summary(kind: str, summary: dict, out: str | Path) -> None:
    test = summary["test"]
    console.print(
        f"[green]{kind}[/green]: test Hit@1 {test['hit1']:.3f}  Hit@3 {test['hit3']:.3f}  "
        f"F1 {test['f1_macro']:.3f} on {test['n']} clips; bundle {out}",
        highlight=False,
    )


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from streamrec.train.evaluate import evaluate

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
    )
    table = Table(title=f"{result['model']} on {result['dataset']} ({result['split']}, {result['backend']})")
    for column in ("modality", "clips", "Hit@1", "Hit@3", "F1 macro"):
        table.add_column(column, justify="right" if column != "modality" else "left")
    for m in modalities:
        r = result[m]
        table.add_row(m, str(r["n"]), f"{r['hit1']:.3f}", f"{r['hit3']:.3f}", f"{r['f1_macro']:.3f}")
    Console().print(table)
    if result["skipped"]:
        console.print(f"skipped {len(result['skipped'])} rows (reasons in the log above and in the JSON)")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_path}" + (f" and {plot}" if plot else ""))
    return 0


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


def _address(text: str) -> tuple[str, int]:
    from streamrec.runtime.broadcast import parse_address

    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _outputs(args: argparse.Namespace) -> dict:
    """The output options shared by run, live and demo."""
    if args.token and not (args.ws or args.web):
        raise UserError("--token needs --ws or --web: the token guards the websocket server")
    return {
        "ws": args.ws,
        "web": args.web,
        "token": args.token,
        "jsonl": Path(args.jsonl) if args.jsonl else None,
        "view": not args.no_view,
        "explain": args.explain,
    }


def cmd_run(args: argparse.Namespace) -> int:
    from streamrec.cli.run import run_streams
    from streamrec.runtime.sources import SourceSpec, parse_source

    specs = [parse_source(s) for s in args.sources] + [
        SourceSpec("camera", str(n), fps=args.fps) for n in args.camera or []
    ]
    if not specs:
        raise UserError("give at least one SOURCE (file, URL, camera:N, mic:[DEVICE]) or --camera N")
    realtime = True if args.realtime else False if args.fast else None
    if args.wait_clients and not (args.ws or args.web):
        raise UserError("--wait-clients needs --ws or --web: clients connect to those")
    return run_streams(
        specs,
        Path(args.model) if args.model else None,
        args.backend,
        realtime=realtime,
        duration=args.duration,
        hop=args.hop,
        wait_clients=args.wait_clients or 0,
        **_outputs(args),
    )


def cmd_live(args: argparse.Namespace) -> int:
    from streamrec.cli.run import run_streams
    from streamrec.runtime.sources import live_sources

    camera, mic = args.camera, args.mic
    if camera is None and mic is None:
        camera, mic = 0, ""
    specs = live_sources(camera, mic, fps=args.fps)
    return run_streams(
        specs,
        Path(args.model) if args.model else None,
        args.backend,
        realtime=True,
        duration=args.duration,
        hop=args.hop,
        **_outputs(args),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from streamrec.cli.run import run_demo
    from streamrec.runtime.broadcast import DEFAULT_HOST, DEFAULT_PORT

    outputs = _outputs(args)
    return run_demo(
        args.fast,
        args.duration,
        outputs["ws"] or (DEFAULT_HOST, DEFAULT_PORT),
        outputs["view"],
        outputs["jsonl"],
        outputs["token"],
        outputs["web"],
        outputs["explain"],
    )


def cmd_engines_build(args: argparse.Namespace) -> int:
    from streamrec.engines import EngineOptions, build_engines

    options = EngineOptions(
        max_batch=args.max_batch,
        rebuild=args.rebuild,
        calibration_data=Path(args.calibration_data) if args.calibration_data else None,
    )
    built = build_engines(
        Path(args.model) if args.model else None, args.backend, args.precision, progress=True, options=options
    )
    for engine in built:
        console.print(
            f"{engine.kind:>6}: {engine.backend} {engine.precision} -> {engine.path} ({engine.seconds:.1f} s)",
            highlight=False,
        )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from streamrec.bench.report import latency_series, markdown, plot_latency, print_report
    from streamrec.bench.run import BenchOptions, run_bench

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in backends if b not in ("torch", "onnxruntime", "tensorrt")]
    if unknown or not backends:
        raise UserError(f"--backends: unknown {', '.join(unknown) or 'empty list'}; use torch, onnxruntime, tensorrt")
    model = Path(args.model) if args.model else None
    options = BenchOptions.quick(model, backends) if args.quick else BenchOptions(model, backends)
    if args.max_streams:
        options = replace(options, max_streams=args.max_streams)
    command = "streamrec bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "streamrec bench"
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
        path.write_text(markdown(report, histogram, path.parent), encoding="utf-8")
        console.print(f"wrote {path} and {histogram}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="Real-time recognition of musical instruments in live and recorded video.",
    )
    parser.add_argument("--version", action="version", version=f"streamrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks on failure")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser(
        "data", help="build and inspect training corpora", description="Build and inspect training corpora."
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    b = data_commands.add_parser(
        "build",
        help="build the instrument video corpus from the training sources",
        description="Builds a corpus of user-generated-style instrument videos from real sampled instruments "
        "(soundfonts, drum kits), real melodies (music21) and instrument pictures (emoji, openclipart), "
        "in the dataset layout streamrec train/eval read: OUT/labels.csv, OUT/clips/, OUT/README.md. "
        "Deterministic for a seed; splits 70/15/15 with no melody or picture shared across splits.",
    )
    b.add_argument("out", metavar="OUT", help="output directory (created if missing)")
    b.add_argument(
        "--clips-per-class", type=_positive_int, default=200, metavar="N", help="clips per class (default 200)"
    )
    b.add_argument(
        "--seconds", type=_positive_float, default=10.0, metavar="S", help="length of each clip in seconds (default 10)"
    )
    b.add_argument(
        "--classes", metavar="LIST", help=f"comma-separated subset of: {','.join(DEFAULT_CLASSES)} (default all)"
    )
    b.add_argument("--seed", type=int, default=0, help="random seed; same seed, same corpus (default 0)")
    b.add_argument(
        "--workers",
        type=_positive_int,
        default=max(1, os.cpu_count() or 1),
        help="parallel worker processes (default: number of cores)",
    )
    b.add_argument(
        "--preview",
        action="store_true",
        help="also write preview_frames.png (frames per class) and preview_logmel.png (spectrograms)",
    )
    b.set_defaults(func=cmd_data_build)

    x = data_commands.add_parser(
        "example",
        help="render a demo clip: several instruments one after another",
        description="Renders an mp4 in which instruments follow each other at known times (written to OUT.json), "
        "from the test side of the corpus split. `streamrec demo` plays the bundled one.",
    )
    x.add_argument("out", metavar="OUT.mp4")
    x.add_argument(
        "--classes", default="violin,piano,drums,trumpet", help="the sequence (default violin,piano,drums,trumpet)"
    )
    x.add_argument("--seconds", type=_positive_float, default=6.0, help="seconds per instrument (default 6)")
    x.add_argument("--seed", type=int, default=0)
    x.set_defaults(func=cmd_data_example)

    s = data_commands.add_parser(
        "sources",
        help="check (and fetch) the training sources, with their licences",
        description="Lists the training sources and their licences, and checks they are present.",
    )
    s.add_argument(
        "--fetch",
        action="store_true",
        help="fetch the emoji artwork from the npm registry (done by scripts/install.sh)",
    )
    s.set_defaults(func=cmd_data_sources)

    train = commands.add_parser(
        "train",
        help="train audio, video and fusion networks into a model bundle",
        description="Train networks into a model bundle (a directory: manifest.json + weights).",
    )
    train_commands = train.add_subparsers(dest="train_command", metavar="SUBCOMMAND", required=True)
    a = train_commands.add_parser(
        "audio",
        help="train an audio network (Han, Choi, Xception, attention) on log-mel spectrograms",
        description="Trains one of the seeds' audio networks with Adam, class-balanced sampling and early stopping "
        "on validation F1; evaluates the best epoch on the test split; writes BUNDLE/audio.pt, the "
        "manifest, training curves and a confusion matrix (BUNDLE/reports/).",
    )
    a.add_argument("--arch", choices=("han", "choi", "xception", "attention"), default="han", help="architecture")
    a.add_argument(
        "--crop",
        choices=("cc", "uc"),
        help="choi/xception: central 29.1 s crop (cc) or 10 uniform 3 s crops averaged (uc, default)",
    )
    a.add_argument("--frontend", choices=("han", "choi", "realtime"), help="log-mel preset (default: the arch's own)")
    a.add_argument("--window", type=_positive_float, metavar="S", help="input window in seconds (default: the arch's)")
    a.add_argument(
        "--channels",
        type=_int_list,
        metavar="LIST",
        help="conv widths per block, e.g. 16,32,64,128 (default: the seed's sizes)",
    )
    a.add_argument("--embedding-dim", type=_positive_int, metavar="N", help="size of the penultimate features")
    a.add_argument(
        "--representation",
        choices=("joint", "logmel", "embedding"),
        default="joint",
        help="attention (seed 003): what the head attends over: an embedding CNN trained with it (joint, "
        "default), the log-mel frames themselves, or a frozen embedding CNN (random or --embedding)",
    )
    a.add_argument(
        "--embedding",
        metavar="FILE",
        help="with --representation embedding: a checkpoint of `python -m streamrec.train.seed003 pretrain` "
        "(default: the embedding CNN stays randomly initialised)",
    )
    a.add_argument("--data", required=True, metavar="DIR", help="dataset directory (labels.csv + clips)")
    a.add_argument("--out", required=True, metavar="BUNDLE", help="model bundle directory to write (created)")
    a.add_argument("--epochs", type=_positive_int, default=60, help="maximum epochs (default 60)")
    a.add_argument(
        "--patience",
        type=_positive_int,
        default=10,
        help="early stopping: epochs without a better validation F1 (default 10, as the seed paper)",
    )
    a.add_argument("--max-minutes", type=_positive_float, help="stop after this much training time")
    a.add_argument("--batch-size", type=_positive_int, default=32)
    a.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    a.add_argument("--crops-per-clip", type=_positive_int, default=4, help="random windows per clip and epoch")
    a.add_argument("--specaugment", action="store_true", help="mask random mel bands and frames while training")
    a.add_argument(
        "--background",
        action="store_true",
        help="add a 'no instrument' output trained on generated "
        "silence, noise and speech (what the live runtime needs to stay quiet between pieces)",
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--resume", action="store_true", help="continue an interrupted run from BUNDLE/.train/")
    a.add_argument("--workers", type=_positive_int, default=max(1, os.cpu_count() or 1), help="decoding processes")
    a.set_defaults(func=cmd_train_audio)

    def common(p: argparse.ArgumentParser, epochs: int, patience: int) -> None:
        p.add_argument("--data", required=True, metavar="DIR", help="dataset directory (labels.csv + clips)")
        p.add_argument("--out", required=True, metavar="BUNDLE", help="model bundle directory")
        p.add_argument("--epochs", type=_positive_int, default=epochs, help=f"maximum epochs (default {epochs})")
        p.add_argument(
            "--patience",
            type=_positive_int,
            default=patience,
            help=f"early stopping patience in epochs (default {patience})",
        )
        p.add_argument("--max-minutes", type=_positive_float, help="stop after this much training time")
        p.add_argument("--batch-size", type=_positive_int, default=64)
        p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--workers", type=_positive_int, default=max(1, os.cpu_count() or 1), help="decoding processes")

    v = train_commands.add_parser(
        "video",
        help="train the frame network (EfficientNet-Lite0 or Inception v3) on frames at 1 fps",
        description="Trains the frame network: frames at 1 fps resized to 256 and centre-cropped to 224, random "
        "horizontal flips, each frame labelled with its clip's label; a clip's prediction is the mean "
        "over its frames. The backbone is frozen (features cached) and the head trained.",
    )
    common(v, epochs=60, patience=5)
    v.add_argument("--backbone", choices=("efficientnet_lite0", "inception_v3"), default="efficientnet_lite0")
    v.add_argument("--no-pretrained", action="store_true", help="random backbone instead of ImageNet weights")
    v.add_argument("--weights", metavar="FILE", help="local backbone weights file (Inception v3 state dict)")
    v.add_argument("-k", type=_positive_int, default=10, help="frames drawn per clip and epoch (default 10)")
    v.set_defaults(func=cmd_train_video)

    f = train_commands.add_parser(
        "fusion",
        help="train the late-fusion network over a bundle's audio and frame networks",
        description="Trains the late-fusion network of the seed paper over k frame features and one audio window; "
        "'frozen' keeps the extractors fixed, 'joint' trains them with the fusion network (seed 004).",
    )
    common(f, epochs=60, patience=8)
    f.add_argument("--scheme", choices=("frozen", "joint"), default="frozen")
    f.add_argument("-k", type=_positive_int, default=5, help="frame slots of the fusion input (default 5)")
    f.set_defaults(func=cmd_train_fusion)

    t = train_commands.add_parser(
        "all",
        help="train audio, video and fusion in order: the default bundle's recipe",
        description="Trains the real-time audio network, the EfficientNet-Lite0 frame network and the late-fusion "
        "network into one bundle, with progress; this is how the bundled default model is made.",
    )
    common(t, epochs=30, patience=10)
    t.add_argument(
        "--scheme",
        choices=("frozen", "joint"),
        default="joint",
        help="fusion training scheme (default joint: it keeps each modality alone within 2 F1 points)",
    )
    t.set_defaults(func=cmd_train_all)

    e = commands.add_parser(
        "eval",
        help="evaluate a model bundle on a dataset: Hit@1, Hit@3, F1 per modality",
        description="Evaluates the audio-only, frame-only and fused predictions of a model bundle on a dataset in "
        "the streamrec layout (labels.csv + media). Clips lacking a modality count for the others; fusion "
        "uses whatever each clip has. Writes the eval JSON and a figure of the confusion matrices.",
    )
    e.add_argument("dataset", metavar="DATASET", help="dataset directory (labels.csv + clips)")
    e.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled model)")
    e.add_argument("--split", default="test", help="split(s) to evaluate, comma-separated (default test)")
    e.add_argument(
        "--modality", default="audio,video,fusion", help="comma-separated: audio, video, fusion (default all)"
    )
    e.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "tensorrt"),
        help="inference backend (default torch, the reference)",
    )
    e.add_argument("--json", metavar="FILE", help="write the eval JSON here (and FILE.png with the confusion matrices)")
    e.add_argument("--plot", metavar="FILE", help="write the confusion matrices here (PNG)")
    e.add_argument("--workers", type=_positive_int, default=max(1, os.cpu_count() or 1), help="decoding processes")
    e.set_defaults(func=cmd_eval)

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
    an.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled model)")
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
    an.add_argument("--workers", type=_positive_int, default=max(1, os.cpu_count() or 1), help="decoding processes")
    an.set_defaults(func=cmd_analyze)

    def outputs(p: argparse.ArgumentParser, ws_default: str = "off") -> None:
        p.add_argument(
            "--ws",
            type=_address,
            metavar="HOST:PORT",
            help=f"serve prediction events over websockets (default {ws_default}; binds 127.0.0.1 "
            "unless a host is given)",
        )
        p.add_argument(
            "--web",
            type=_address,
            metavar="[HOST:]PORT",
            help="serve the browser live view at http://HOST:PORT/ (binds 127.0.0.1 unless a host is "
            "given; port 0 = any free port, printed at start)",
        )
        p.add_argument(
            "--token",
            help="clients must send this token (?token=... or an Authorization: Bearer header); "
            "the web view takes it from its own URL",
        )
        p.add_argument(
            "--explain",
            action="store_true",
            help="add Grad-CAM of the newest frame for the top class to each prediction (a 7x7 grid and "
            "a small overlay image, shown by the web view); runs the frame network's trunk again "
            "in torch once per frame",
        )
        p.add_argument("--jsonl", metavar="FILE", help="also write every event to FILE, one JSON object per line")
        p.add_argument("--no-view", action="store_true", help="no terminal live view")
        p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")

    def model(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled model)")
        p.add_argument(
            "--backend",
            default="auto",
            choices=("auto", "torch", "onnxruntime", "tensorrt"),
            help="inference backend; auto = TensorRT with a CUDA GPU, else ONNX Runtime (default auto)",
        )
        p.add_argument(
            "--hop", type=_positive_float, default=0.5, metavar="S", help="seconds between audio windows (default 0.5)"
        )

    r = commands.add_parser(
        "run",
        help="recognise instruments in files, RTSP/HTTP streams or devices",
        description="Runs recognition on one or more sources at once, each its own stream: media files, "
        "rtsp:// or http(s):// URLs (HLS included), camera:N, mic:[DEVICE]. Files run as fast as "
        "possible by default, URLs and devices in real time.",
    )
    r.add_argument("sources", nargs="*", metavar="SOURCE")
    pace = r.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="pace files in real time (default for URLs/devices)")
    pace.add_argument("--fast", action="store_true", help="as fast as possible (default for files)")
    r.add_argument("--camera", type=int, action="append", metavar="N", help="add camera N as a stream (repeatable)")
    r.add_argument("--fps", type=_positive_float, help="frames per second taken from cameras (default 1)")
    r.add_argument(
        "--wait-clients",
        type=_positive_int,
        metavar="N",
        help="start the sources only once N websocket or web-view clients are connected",
    )
    model(r)
    outputs(r)
    r.set_defaults(func=cmd_run)

    li = commands.add_parser(
        "live",
        help="live recognition from a webcam (1 fps frames) and a microphone",
        description="Live camera + microphone recognition. Without --camera or --mic both defaults are used; "
        "with one of them, only that one.",
    )
    li.add_argument("--camera", nargs="?", const=0, metavar="N", help="camera index or device path (default 0)")
    li.add_argument("--mic", nargs="?", const="", metavar="DEVICE", help="input device name or index (default: system)")
    li.add_argument("--fps", type=_positive_float, help="frames per second taken from the camera (default 1)")
    model(li)
    outputs(li)
    li.set_defaults(func=cmd_live)

    d = commands.add_parser(
        "demo",
        help="the bundled example clip through the bundled model, live view + websocket server",
        description="Plays the bundled example clip (violin, piano, drums, trumpet) in real time through the "
        "bundled model: terminal live view and websocket server on 127.0.0.1:8765. Offline.",
    )
    d.add_argument("--fast", action="store_true", help="as fast as possible instead of real time")
    outputs(d, ws_default="127.0.0.1:8765")
    d.set_defaults(func=cmd_demo)

    bn = commands.add_parser(
        "bench",
        help="measure latency, switch detection, concurrent streams and throughput on this machine",
        description="Benchmarks the runtime on this machine with the bundled example clip: per-stage latency "
        "(p50/p95/p99) for each backend side by side, capture-to-emission latency and instrument-switch "
        "detection of a real-time stream watched by a websocket client, the most concurrent real-time "
        "streams one process carries, offline throughput on a 3-minute clip, and each network's "
        "multiply-adds against the CPU's measured peak. Takes about 5 minutes; --quick takes seconds "
        "(for a smoke test, not for figures).",
    )
    bn.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled model)")
    bn.add_argument(
        "--backends",
        default="torch,onnxruntime",
        metavar="LIST",
        help="backends side by side, comma-separated; the last one runs the live, streams and "
        "offline measurements as the best (default torch,onnxruntime)",
    )
    bn.add_argument("--max-streams", type=_positive_int, metavar="N", help="stop the streams search at N (default 160)")
    bn.add_argument("--quick", action="store_true", help="tiny sizes: seconds instead of minutes")
    bn.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    bn.add_argument(
        "--markdown",
        metavar="FILE",
        help="write a report (e.g. docs/benchmarks.md) and its latency histogram under figures/ beside it",
    )
    bn.set_defaults(func=cmd_bench)

    en = commands.add_parser(
        "engines",
        help="export and compile inference engines for a model bundle",
        description="Export ONNX and build engines for a model bundle.",
    )
    en_commands = en.add_subparsers(dest="engines_command", metavar="SUBCOMMAND", required=True)
    eb = en_commands.add_parser(
        "build",
        help="export ONNX and build ONNX Runtime or TensorRT engines, cached beside the bundle",
        description="Exports the bundle's audio, frame and fusion networks to ONNX and builds engines into "
        "BUNDLE/engines/, keyed by the weights' hash, precision and runtime/GPU, so a stale engine is "
        "never used. INT8 on ONNX Runtime quantizes matrix products dynamically; INT8 on TensorRT is "
        "calibrated on --calibration-data.",
    )
    eb.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled model)")
    eb.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    eb.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    eb.add_argument("--max-batch", type=_positive_int, default=16, help="largest batch of the engines (default 16)")
    eb.add_argument("--calibration-data", metavar="DATASET", help="dataset whose clips calibrate INT8 (TensorRT)")
    eb.add_argument("--rebuild", action="store_true", help="rebuild even when a valid cached engine exists")
    eb.set_defaults(func=cmd_engines_build)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    try:
        code = args.func(args)
    except UserError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        code = 2
    except KeyboardInterrupt:
        console.print("interrupted")
        code = 130
    except Exception as e:  # an internal failure: one line, the traceback with --verbose
        if args.verbose:
            console.print_exception()
        console.print(
            f"[red]internal error:[/red] {type(e).__name__}: {e} (run with --verbose for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        code = 1
    sys.exit(code)
