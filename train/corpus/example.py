"""`streamrec data example OUT.mp4`: the demo clip, several instruments one after another.

Made with the corpus builder from the test side of the split (melodies and pictures no training clip
uses), with both streams present and no second instrument, so the change points are known exactly;
they are written beside the clip as OUT.json (class, start and end in seconds).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from streamrec.train.corpus import audio as A
from streamrec.train.corpus.build import BuildOptions, gather_sources, plan_clips, render_media, write_clip
from streamrec.train.corpus.plan import ClipPlan, SourceBank
from streamrec.train.corpus.sources import cache_dir

DEFAULT_SEQUENCE = ("violin", "piano", "drums", "trumpet")


def example_plans(
    classes: tuple[str, ...] = DEFAULT_SEQUENCE, seconds: float = 6.0, seed: int = 0
) -> tuple[SourceBank, list[ClipPlan], list[dict]]:
    """The sources, one test-split clip plan per segment (both streams, one voice) and the segment description."""
    options = BuildOptions(
        out=Path("."), clips_per_class=20, seconds=seconds, classes=tuple(sorted(set(classes))), seed=seed
    )
    bank = gather_sources(options.classes, seed)
    plans = plan_clips(options, bank)
    chosen, segments = [], []
    for i, name in enumerate(classes):
        plan = next(p for p in plans if p.class_name == name and p.split == "test")
        plan = replace(plan, has_audio=True, has_video=True, voices=plan.voices[:1])
        chosen.append(plan)
        segments.append(
            {
                "class": name,
                "start": i * seconds,
                "end": (i + 1) * seconds,
                "melody": plan.voices[0].melody_id,
                "sound_source": plan.voices[0].source,
                "image": plan.image_id,
            }
        )
    return bank, chosen, segments


def build_example(out: Path, classes: tuple[str, ...] = DEFAULT_SEQUENCE, seconds: float = 6.0, seed: int = 0) -> dict:
    """Writes OUT (mp4) and OUT.json; returns the segment description."""
    bank, plans, segments = example_plans(classes, seconds, seed)
    speech = A.speech_pool(cache_dir() / "speech")
    audio_parts, frame_parts = [], []
    for i, plan in enumerate(plans):
        audio, frames = render_media(plan, bank, seconds, speech, np.random.default_rng([seed, i]))
        audio_parts.append(audio)
        frame_parts.append(frames)
    write_clip(out, np.concatenate(audio_parts), np.concatenate(frame_parts), np.random.default_rng(seed))
    description = {"clip": out.name, "seconds": seconds * len(classes), "seed": seed, "segments": segments}
    out.with_suffix(".json").write_text(json.dumps(description, indent=2) + "\n")
    return description
