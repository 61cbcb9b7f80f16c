"""What a corpus build writes beside its clips: labels.csv (docs/dataset.md) and the README with counts,
sources and licences."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

from streamrec.train.corpus import audio as A
from streamrec.train.corpus import images as I
from streamrec.train.corpus.plan import LABEL_COLUMNS, BuildOptions, ClipPlan, SourceBank
from streamrec.train.corpus.sources import LICENCES


def write_labels(out: Path, plans: list[ClipPlan]) -> None:
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for p in plans:
            writer.writerow(
                [
                    p.rel_path,
                    p.class_name,
                    p.split,
                    ";".join(p.labels),
                    int(p.has_audio),
                    int(p.has_video),
                    p.voices[0].melody_id,
                    p.voices[0].source if p.has_audio else "",
                    p.image_id if p.has_video else "",
                    p.seed,
                ]
            )


def write_readme(options: BuildOptions, plans: list[ClipPlan], bank: SourceBank, seconds_taken: float) -> None:
    per_class: dict[str, Counter] = defaultdict(Counter)
    melodies: dict[str, set] = defaultdict(set)
    sounds: dict[str, set] = defaultdict(set)
    pictures: dict[str, set] = defaultdict(set)
    licences: set[str] = {"music21", "generated", "espeak-ng"}
    for p in plans:
        c = per_class[p.class_name]
        c[p.split] += 1
        c["audio only"] += not p.has_video
        c["video only"] += not p.has_audio
        c["multi-label"] += len(p.labels) > 1
        if p.has_audio:
            melodies[p.class_name].add(p.voices[0].melody_id)
            sounds[p.class_name].add(p.voices[0].source)
        if p.has_video:
            pictures[p.class_name].add(p.image_id)
            licences.add(bank.image_licence[p.image_id])
        for v in p.voices:
            kind = v.source.split(":")[0]
            licences.add(
                {
                    "FluidR3_GM.sf2": "fluid-soundfont-gm",
                    "MuseScore_General.sf3": "musescore-general-soundfont",
                    "hydrogen": "hydrogen-drumkits",
                }.get(kind, kind)
            )
    lines = [
        "# streamrec instrument video corpus",
        "",
        f"Built by `streamrec data build {options.out} --clips-per-class {options.clips_per_class} "
        f"--seconds {options.seconds:g} --seed {options.seed}` in {seconds_taken / 60:.1f} min "
        f"({len(plans)} clips of {options.seconds:g} s; video {I.FRAME_WIDTH}x{I.FRAME_HEIGHT} at {I.VIDEO_FPS} fps, "
        f"H.264; audio {A.AUDIO_RATE} Hz mono, AAC).",
        "",
        "Splits are 70/15/15 by clip and by source: no melody, drum pattern or picture is used in two splits.",
        "",
        "## Clips per class",
        "",
        "| class | train | val | test | audio only | video only | multi-label | melodies | sound sources | pictures |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in options.classes:
        c = per_class[name]
        lines.append(
            f"| {name} | {c['train']} | {c['val']} | {c['test']} | {c['audio only']} | {c['video only']} | "
            f"{c['multi-label']} | {len(melodies[name])} | {len(sounds[name])} | {len(pictures[name])} |"
        )
    lines += [
        "",
        "Distinct pictures available per class (all splits): "
        + ", ".join(f"{n} {sum(len(v) for v in bank.image_split[n].values())}" for n in options.classes)
        + ".",
        "Classes with few pictures (and procedural drawings) are the visual model's known weakness.",
        "",
        "## Sources and licences",
        "",
    ]
    lines += [f"- {key}: {LICENCES[key]}" for key in sorted(licences) if key in LICENCES]
    (options.out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
