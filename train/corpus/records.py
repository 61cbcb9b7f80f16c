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

# Soundfonts that share their samples count as one sample set: MuseScore General reuses FluidR3's, except
# for these classes (shared/DATA.md).
OWN_MUSESCORE_SAMPLES = ("piano", "cello")


def sample_set(class_name: str, sound_source: str) -> str:
    """The independent recording session behind a labels.csv sound_source ("FluidR3_GM.sf2:program 40")."""
    kind, _, detail = sound_source.partition(":")
    if kind == "hydrogen":
        return f"hydrogen:{detail}"
    if kind == "lmms":  # LMMS's recordings, one set however many of its notes a class uses
        return "lmms"
    if kind.startswith("MuseScore_General") and class_name not in OWN_MUSESCORE_SAMPLES:
        return "FluidR3_GM.sf2"
    return kind


def picture_source(image_id: str) -> str:
    """The artist or art style behind a labels.csv image: an emoji style, one openclipart drawing family
    (numbered variants of one drawing count once), or streamrec's procedural drawings."""
    kind, _, rest = image_id.partition(":")
    if kind == "openclipart":
        stem = Path(rest).stem
        return f"openclipart:{stem.rstrip('0123456789').rstrip('_')}"
    return kind


def independent_sources(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Per class, how many independent sample sets and picture sources its clips draw on (labels.csv rows
    with the corpus's sound_source and image columns)."""
    sets: dict[str, set[str]] = defaultdict(set)
    pictures: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.get("sound_source"):
            sets[row["label"]].add(sample_set(row["label"], row["sound_source"]))
        if row.get("image"):
            pictures[row["label"]].add(picture_source(row["image"]))
    return {c: {"sample_sets": len(sets[c]), "picture_sources": len(pictures[c])} for c in sorted({**sets, **pictures})}


def training_sources(data: Path) -> dict[str, dict[str, int]]:
    """independent_sources of a dataset's train split ({} for a dataset without those columns): what the bundle
    manifest records of the material a network was trained on."""
    path = Path(data) / "labels.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return independent_sources([row for row in csv.DictReader(f) if row.get("split") == "train"])


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
                    "lmms": "lmms-common",
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
        "| class | train | val | test | audio only | video only | multi-label | melodies | sound sources "
        "| independent sample sets | pictures | picture artists/styles |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in options.classes:
        c = per_class[name]
        sets = {sample_set(name, s) for s in sounds[name]}
        artists = {picture_source(i) for i in pictures[name]}
        lines.append(
            f"| {name} | {c['train']} | {c['val']} | {c['test']} | {c['audio only']} | {c['video only']} | "
            f"{c['multi-label']} | {len(melodies[name])} | {len(sounds[name])} | {len(sets)} | {len(pictures[name])} "
            f"| {len(artists)} |"
        )
    lines += [
        "",
        "Distinct pictures available per class (all splits): "
        + ", ".join(f"{n} {sum(len(v) for v in bank.image_split[n].values())}" for n in options.classes)
        + ".",
        "Classes with few pictures (and procedural drawings) are the visual model's known weakness. Independent "
        "sample sets count soundfonts that share samples once (MuseScore General reuses FluidR3's except for "
        "piano and cello), each Hydrogen kit once and LMMS's one-note recordings once; picture artists/styles "
        "count each emoji style, each openclipart drawing (numbered variants once) and the procedural drawings "
        "once.",
        "",
        "## Sources and licences",
        "",
    ]
    lines += [f"- {key}: {LICENCES[key]}" for key in sorted(licences) if key in LICENCES]
    (options.out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
