"""`streamrec tune`: how a bundle fuses its modalities, and its smoothing and gating thresholds, chosen on
material from sources it was not trained on.

First the fusion rule (streamrec.core.scores.FusionRule): per-class offsets that recalibrate the audio and
the frame probabilities (fitted on the val clips of a source-disjoint set, `streamrec data field-dev`), then
the fusion network or the product of the two at some audio weight, whichever has the highest macro-F1 on
those clips. Then the smoothing: the networks' scores do not say by themselves when a class should be shown
as active; the smoothing (moving average, on/off thresholds, minimum hold, the "no instrument" gate, the
energy floor, the audio's early turn-on) decides that. Its settings are chosen, as a user would judge them,
on the set's val long clips: fewest wrong classes during music plus classes lit during silence, speech and
noise, among the settings that miss no instrument and switch within SWITCH_LIMIT seconds
(median); when none does, the fewest missed instruments, then switching in time. The networks run once per
clip: each setting smooths what they said, as the runtime would have. Both choices are written into the
bundle's manifest; evaluation and the runtime use them.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import asdict, replace
from pathlib import Path

from streamrec.cli.args import add_model, console

SWITCH_LIMIT = 1.5  # seconds, median time from a change to the new instrument being active
# The settings searched, around the defaults (smoothing is replayed, not the networks: 3456 take about a minute).
# Turning on always takes two updates or more (audio_on_updates here, SmoothingOptions.on_updates for the fused
# scores): one window, such as an instrument's tail, must not light a class.
GRID = {
    "alpha": (0.5, 0.7, 1.0),
    "min_hold": (1.0, 1.5),
    "background_max": (0.5, 0.3, 0.15),
    "energy_floor_db": (-50.0, -42.0),
    "on_threshold": (0.3, 0.4, 0.5, 0.6),
    "audio_on": (0.7, 0.8, 0.9, 0.97),
    "audio_on_updates": (2, 3),
    "audio_on_video": (None, 0.05, 0.1),
}


def _shown(value: float | None) -> str:
    return "off" if value is None else f"{value:g}"


def register(commands: argparse._SubParsersAction) -> None:
    t = commands.add_parser(
        "tune",
        help="choose a bundle's fusion rule and smoothing thresholds on source-disjoint val material",
        description="Fits per-class offsets that recalibrate the audio and frame probabilities on the val clips "
        "of DATASET (a set from sources training never saw), then chooses how the bundle fuses audio and frames (the "
        "fusion network, or the product of their probabilities at an audio weight) by macro-F1 on those clips. "
        "Then runs the val long "
        "clips of DATASET (timelines.json; `streamrec data field-dev` writes them) "
        "through the live runtime under each setting of the smoothing (moving average, minimum hold, no instrument "
        "gate, energy floor, on threshold; the audio's early turn-on: how sure, for how many updates, with what "
        "frame support) and keeps the one "
        "with the fewest wrong classes during music plus classes lit during background, among those that miss "
        f"no instrument and switch within {SWITCH_LIMIT:g} s "
        "(median; when none does, the fewest missed, then switching in time). Writes both into the bundle's "
        "manifest, which evaluation and the runtime then use.",
    )
    t.add_argument("dataset", metavar="DATASET", help="dataset with timelines.json (its val long clips are used)")
    add_model(t)
    t.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    t.add_argument(
        "--class-offsets",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit per-class offsets that recalibrate each modality's probabilities on the val clips (default: on)",
    )
    t.add_argument("--dry-run", action="store_true", help="print the table, leave the bundle as it is")
    t.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    from rich.table import Table

    from streamrec.core.bundle import Bundle
    from streamrec.core.errors import UserError
    from streamrec.engines import load_networks
    from streamrec.runtime.options import RuntimeOptions
    from streamrec.runtime.replay import recognitions
    from streamrec.runtime.smoothing import Smoother, SmoothingOptions
    from streamrec.train.evaluate import choose_fusion_rule, rule_name
    from streamrec.train.timeline import combine, load_timelines, score_timeline

    dataset = Path(args.dataset)
    timelines = load_timelines(dataset, ["val"])
    timelines = [t for t in timelines if t.split == "val"]
    if not timelines:
        raise UserError(f"{dataset} has no val long clips (timelines.json): build one with `streamrec data field-dev`")
    bundle = Bundle.load(Path(args.model) if args.model else None)
    networks = load_networks(bundle.root, args.backend)
    rule, rule_f1 = choose_fusion_rule(dataset, bundle, networks, class_offsets=args.class_offsets)
    if rule.audio_offsets or rule.video_offsets:
        offsets = Table(title="class offsets (added to log-probabilities), fitted on the val clips")
        for column in ("class", "audio", "frames"):
            offsets.add_column(column, justify="left" if column == "class" else "right")
        for i, name in enumerate(bundle.classes):
            offsets.add_row(name, *(f"{o[i]:+.2f}" if o else "-" for o in (rule.audio_offsets, rule.video_offsets)))
        console.print(offsets)
    rules = Table(title=f"fusion rule: macro-F1 on the val clips of {dataset}")
    rules.add_column("rule")
    rules.add_column("F1", justify="right")
    for name, f1 in rule_f1.items():
        rules.add_row(f"[bold]{name}[/bold]" if name == rule_name(rule) else name, f"{f1:.3f}")
    console.print(rules)
    console.print(f"chosen: {rule_name(rule)}", highlight=False)
    # The networks run once per clip; each setting then smooths what they said, as the runtime would have.
    runtime_options = RuntimeOptions(bundle=bundle.root, backend=args.backend, fusion_rule=rule)
    said = [(timeline, recognitions(dataset / timeline.clip, runtime_options, networks)) for timeline in timelines]
    base = SmoothingOptions()
    rows = []
    for values in itertools.product(*GRID.values()):
        options = replace(base, **dict(zip(GRID, values)))
        scores = []
        for timeline, updates in said:
            smoother = Smoother(bundle.classes, options)
            active = [(t, smoother.follow(t, recognition).active) for t, recognition in updates]
            scores.append(score_timeline(timeline, active))
        rows.append((options, combine(scores).summary()))

    def cost(row: tuple) -> tuple:
        s = row[1]
        slow = (s["switch_median_seconds"] or 0) > SWITCH_LIMIT
        # Settings that miss nothing and switch in time first. When none does: the fewest missed changes (a miss
        # is worse than a wrong update), then switching in time, then the fewest wrong and lit updates.
        return (s["missed"], slow, (s["wrong_share"] or 0) + (s["background_share"] or 0))

    best, summary = min(rows, key=cost)
    table = Table(title=f"smoothing chosen among {len(rows)} settings on {len(timelines)} val long clips of {dataset}")
    for column in ("setting", "value", "default"):
        table.add_column(column)
    for name in GRID:
        table.add_row(name, _shown(getattr(best, name)), _shown(getattr(base, name)))
    console.print(table)
    console.print(
        f"wrong class during music {summary['wrong_share']:.3f}, class lit during background "
        f"{summary['background_share']:.3f}, missed {summary['missed']}, switch median "
        f"{summary['switch_median_seconds']} s"
    )
    if not args.dry_run:
        bundle.manifest["fusion_rule"] = {**rule.to_dict(), "chosen_on": f"{dataset} (val clips)", "val_f1": rule_f1}
        bundle.manifest["smoothing"] = {
            "options": {k: v for k, v in asdict(best).items() if v != getattr(base, k)},
            "tuned_on": f"{dataset} (val long clips: {', '.join(t.clip for t in timelines)})",
            "score": summary,
        }
        bundle.write_manifest()
        console.print(f"wrote the fusion rule and the smoothing settings into {bundle.root / 'manifest.json'}")
    return 0
