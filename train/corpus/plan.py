"""What a corpus build plans before it renders anything: its options, each clip's plan and voices, the shared
source material, and the labels.csv columns it writes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.core.classes import DEFAULT_CLASSES
from streamrec.train.corpus.melodies import DrumPattern, Melody
from streamrec.train.corpus.sources import GM_DRUM_KITS


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    clips_per_class: int = 200
    seconds: float = 10.0
    classes: tuple[str, ...] = DEFAULT_CLASSES
    seed: int = 0
    workers: int = max(1, os.cpu_count() or 1)
    preview: bool = False
    recordings_share: float = 0.0  # share of the voices of classes with one-note recordings that play one; 0: none


@dataclass(frozen=True)
class Voice:
    """One instrument part of a clip's audio."""

    class_name: str
    source: str  # "FluidR3_GM.sf2:program 40", "hydrogen:BJA_Pacific", "lmms:violin_fingered01", ...
    melody_id: str
    gain_db: float  # relative to the main instrument


@dataclass(frozen=True)
class ClipPlan:
    index: int
    class_name: str
    split: str
    rel_path: str
    seed: int
    has_audio: bool
    has_video: bool
    image_id: str
    voices: tuple[Voice, ...]
    bpm: float

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.class_name] + [v.class_name for v in self.voices]))


@dataclass
class SourceBank:
    """The note and sound material shared by all clips, with the split each melody/pattern/image belongs to."""

    melodies: dict[str, Melody]
    patterns: dict[str, DrumPattern]
    melody_split: dict[str, list[str]]
    pattern_split: dict[str, list[str]]
    image_split: dict[str, dict[str, list[str]]]
    image_licence: dict[str, str]
    soundfonts: list[Path]
    kits: list = field(default_factory=list)
    samples: dict[str, tuple[Path, ...]] = field(default_factory=dict)  # per class, one-note recordings (LMMS)
    gm_kits: tuple[int, ...] = GM_DRUM_KITS  # drum kit presets (bank 128) the soundfonts have
    speech: tuple[Path, ...] = ()  # recorded speech; empty: speech synthesized with espeak-ng
    noise: tuple[Path, ...] = ()  # recorded noise beds (crowd, rain, traffic); empty: coloured noise


LABEL_COLUMNS = (
    "path",
    "label",
    "split",
    "labels",
    "has_audio",
    "has_video",
    "melody",
    "sound_source",
    "image",
    "seed",
)
