"""Scores a long clip's live predictions against its timeline: what a user sees in the live view.

A timeline is the clip's segments in media time, each one instrument class or BACKGROUND (silence,
speech, noise). Updates within GRACE_SECONDS after a change are not scored (the smoothing needs a
moment to follow); of the rest, music updates count when a wrong class is active, background updates
when any class is. A change to an instrument is detected by the first update of its segment that lists
it as active; the switch time is that update's media time minus the change's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from streamrec.core.errors import UserError

BACKGROUND = "none"  # the segment label of silence, speech or noise
GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class Segment:
    label: str  # a class name, or BACKGROUND
    start: float
    end: float


@dataclass(frozen=True)
class Timeline:
    clip: str  # path relative to the dataset root
    segments: tuple[Segment, ...]
    split: str | None = None  # "val" (for tuning) or "test" (reported); None: any

    def segment_at(self, t: float) -> tuple[int, Segment] | None:
        for i, s in enumerate(self.segments):
            if s.start < t <= s.end:
                return i, s
        return None


@dataclass(frozen=True)
class TimelineScore:
    music_updates: int
    wrong_active: int  # music updates with a class active that is not the segment's
    background_updates: int
    any_active: int  # background updates with any class active
    changes: int  # changes to an instrument (the first segment counts: the stream starts there)
    missed: int
    switch_seconds: list[float]

    @property
    def wrong_share(self) -> float | None:
        return self.wrong_active / self.music_updates if self.music_updates else None

    @property
    def background_share(self) -> float | None:
        return self.any_active / self.background_updates if self.background_updates else None

    def summary(self) -> dict:
        out = asdict(self)
        out["wrong_share"] = self.wrong_share
        out["background_share"] = self.background_share
        out["switch_seconds"] = [round(s, 3) for s in self.switch_seconds]
        out["switch_median_seconds"] = round(float(np.median(self.switch_seconds)), 3) if self.switch_seconds else None
        return out


def load_timelines(dataset: Path, splits: Sequence[str] | None = None) -> list[Timeline]:
    """DATASET/timelines.json: [{"clip": "long/x.mp4", "split": "test", "segments": [{"label", "start", "end"},
    ...]}, ...]; with `splits`, the long clips of those splits (and those without one)."""
    path = dataset / "timelines.json"
    if not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        timelines = [
            Timeline(
                t["clip"],
                tuple(Segment(s["label"], float(s["start"]), float(s["end"])) for s in t["segments"]),
                t.get("split"),
            )
            for t in raw
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a timelines file: {e}") from e
    return [t for t in timelines if splits is None or t.split is None or t.split in splits]


def score_timeline(timeline: Timeline, predictions: Sequence[tuple[float, Sequence[str]]]) -> TimelineScore:
    """predictions: (media time t, active classes) of each update, in order."""
    music = wrong = background = lit = 0
    first_hit: dict[int, float] = {}
    for t, active in predictions:
        found = timeline.segment_at(t)
        if found is None:
            continue
        index, segment = found
        if segment.label != BACKGROUND and segment.label in active and index not in first_hit:
            first_hit[index] = t - segment.start
        if t - segment.start < GRACE_SECONDS and index > 0:
            continue
        if segment.label == BACKGROUND:
            background += 1
            lit += bool(active)
        else:
            music += 1
            wrong += any(a != segment.label for a in active)
    instruments = [i for i, s in enumerate(timeline.segments) if s.label != BACKGROUND]
    return TimelineScore(
        music,
        wrong,
        background,
        lit,
        len(instruments),
        sum(i not in first_hit for i in instruments),
        [first_hit[i] for i in instruments if i in first_hit and i > 0],  # the first segment has no change
    )


def combine(scores: Sequence[TimelineScore]) -> TimelineScore:
    return TimelineScore(
        sum(s.music_updates for s in scores),
        sum(s.wrong_active for s in scores),
        sum(s.background_updates for s in scores),
        sum(s.any_active for s in scores),
        sum(s.changes for s in scores),
        sum(s.missed for s in scores),
        [x for s in scores for x in s.switch_seconds],
    )
