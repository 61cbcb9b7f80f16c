"""Note material: real melodies from the music21 corpus, our own phrases, and drum patterns.

A note is (pitch, start, duration) with pitch a MIDI number and times in beats; a drum hit is
(role, start, velocity). Each melody and pattern has an id, which is what the split is made on,
so that no melody is heard on both sides of a split.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from streamrec.train.corpus.sources import cache_dir

# music21 is imported where its corpus is parsed: slow to import, needed once per cache.

log = logging.getLogger(__name__)

Note = tuple[int, float, float]  # (MIDI pitch, start beat, duration in beats)
Hit = tuple[str, float, float]  # (drum role, start beat, velocity 0..1)

# How much of the music21 corpus to use: enough distinct tunes that every split has dozens.
N_FIDDLE_TUNES = 180  # ryansMammoth: Irish/Scottish reels, hornpipes, strathspeys (ABC)
N_CHORALES = 80  # Bach chorales, soprano line (MusicXML)
N_GENERATED_PHRASES = 60  # our own scale phrases and arpeggios
N_DRUM_PATTERNS = 60  # our own rhythms
MIN_NOTES = 16
POOL_VERSION = 1  # bump when the extraction below changes, to invalidate caches


@dataclass(frozen=True)
class Melody:
    id: str
    source: str  # "music21" or "generated"
    notes: tuple[Note, ...]

    @property
    def length_beats(self) -> float:
        return max(start + dur for _, start, dur in self.notes)


@dataclass(frozen=True)
class DrumPattern:
    id: str
    hits: tuple[Hit, ...]
    length_beats: float


def _extract(score) -> list[Note]:
    """The top line of the first part: chords give their highest pitch, grace notes are dropped."""
    part = score.parts[0] if getattr(score, "parts", None) else score
    notes: list[Note] = []
    for element in part.flatten().notes:
        duration = float(element.quarterLength)
        if duration <= 0:
            continue
        pitch = max(p.midi for p in element.pitches)
        notes.append((int(pitch), float(element.offset), duration))
    return notes


def _corpus_melodies() -> list[Melody]:
    from music21 import corpus  # slow import; only needed once per cache

    fiddle = sorted(p for p in corpus.getPaths() if p.suffix == ".abc" and p.parent.name == "ryansMammoth")
    chorales = sorted(p for p in corpus.getComposer("bach") if "bwv" in p.name)
    step_f, step_c = max(1, len(fiddle) // N_FIDDLE_TUNES), max(1, len(chorales) // N_CHORALES)
    chosen = [("fiddle", p) for p in fiddle[::step_f][:N_FIDDLE_TUNES]] + [
        ("chorale", p) for p in chorales[::step_c][:N_CHORALES]
    ]
    melodies = []
    for kind, path in chosen:
        try:
            notes = _extract(corpus.parse(path))
        except Exception as e:  # music21 raises many types on odd files; one bad score is not fatal
            log.debug("skipping %s: %s", path, e)
            continue
        if len(notes) >= MIN_NOTES:
            melodies.append(Melody(f"{kind}:{path.stem}", "music21", tuple(notes)))
    return melodies


def _generated_phrases(seed: int = 7) -> list[Melody]:
    """Our own phrases: scale runs and arpeggios over a few modes, in C, transposed later."""
    rng = np.random.default_rng(seed)
    scales = {
        "major": (0, 2, 4, 5, 7, 9, 11),
        "minor": (0, 2, 3, 5, 7, 8, 10),
        "dorian": (0, 2, 3, 5, 7, 9, 10),
        "pentatonic": (0, 2, 4, 7, 9),
    }
    phrases = []
    for i in range(N_GENERATED_PHRASES):
        scale = list(scales.values())[i % len(scales)]
        degree, t, notes = int(rng.integers(0, len(scale))), 0.0, []
        arpeggio = i % 3 == 0
        while t < 32:
            degree += int(rng.choice([-2, 2, 4, -4]) if arpeggio else rng.choice([-2, -1, -1, 1, 1, 2, 3]))
            degree = int(np.clip(degree, -7, 14))
            octave, step = divmod(degree, len(scale))
            duration = float(rng.choice([0.25, 0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
            notes.append((60 + 12 * octave + scale[step], t, duration))
            t += duration
        phrases.append(Melody(f"generated:phrase{i:03d}", "generated", tuple(notes)))
    return phrases


def load_melodies(progress=None) -> list[Melody]:
    """The whole melody pool, parsed once and cached as JSON (parsing takes ~15 s)."""
    path = cache_dir() / f"melodies-v{POOL_VERSION}.json"
    if path.exists():
        raw = json.loads(path.read_text())
        corpus_melodies = [Melody(m["id"], m["source"], tuple(tuple(n) for n in m["notes"])) for m in raw]
    else:
        if progress:
            progress("parsing melodies from the music21 corpus (once)")
        corpus_melodies = _corpus_melodies()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"id": m.id, "source": m.source, "notes": m.notes} for m in corpus_melodies]))
        tmp.replace(path)
    return corpus_melodies + _generated_phrases()


# Drum grooves on a 16th-note grid of one 4/4 bar: (role, steps where it plays).
_GROOVES: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "rock": [("kick", (0, 8)), ("snare", (4, 12)), ("hat", (0, 2, 4, 6, 8, 10, 12, 14))],
    "disco": [("kick", (0, 4, 8, 12)), ("snare", (4, 12)), ("open_hat", (2, 6, 10, 14))],
    "funk": [("kick", (0, 3, 10)), ("snare", (4, 12, 15)), ("hat", tuple(range(16)))],
    "halftime": [("kick", (0, 6)), ("snare", (8,)), ("hat", (0, 2, 4, 6, 8, 10, 12, 14))],
    "shuffle": [("kick", (0, 8)), ("snare", (4, 12)), ("ride", (0, 3, 4, 7, 8, 11, 12, 15))],
    "breakbeat": [("kick", (0, 10)), ("snare", (4, 12)), ("hat", (0, 2, 4, 6, 8, 10, 12, 14)), ("kick", (7,))],
}


def drum_patterns(seed: int = 11) -> list[DrumPattern]:
    """Our own 4-bar patterns: a groove with random extra hits, a fill on the last bar, crashes."""
    rng = np.random.default_rng(seed)
    patterns = []
    for i in range(N_DRUM_PATTERNS):
        groove = _GROOVES[list(_GROOVES)[i % len(_GROOVES)]]
        hits: list[Hit] = []
        for bar in range(4):
            for role, steps in groove:
                for step in steps:
                    if rng.random() < 0.92:  # drop a few hits so no two bars are identical
                        hits.append((role, bar * 4 + step / 4, float(rng.uniform(0.6, 1.0))))
            extra = rng.integers(0, 16, size=int(rng.integers(0, 3)))
            hits += [("kick" if rng.random() < 0.5 else "snare", bar * 4 + int(s) / 4, 0.5) for s in extra]
        fill_start = 3 * 4 + float(rng.choice([2, 3]))
        hits = [h for h in hits if not (h[1] >= fill_start and h[0] != "kick")]
        hits += [
            ("tom" if rng.random() < 0.6 else "snare", fill_start + k / 4, 0.8)
            for k in range(int((16 - fill_start) * 4))
        ]
        hits.append(("crash", 0.0, 0.9))
        patterns.append(DrumPattern(f"generated:drums{i:03d}", tuple(sorted(hits, key=lambda h: h[1])), 16.0))
    return patterns


def fit_to_range(notes: list[Note], low: int, high: int, rng: np.random.Generator) -> list[Note]:
    """Transposes a melody so that its median sits inside [low, high]; folds outliers by octaves."""
    pitches = np.array([p for p, _, _ in notes])
    centre = rng.uniform(low + 0.35 * (high - low), low + 0.65 * (high - low))
    shift = int(round(centre - np.median(pitches)))
    fitted = []
    for pitch, start, dur in notes:
        p = pitch + shift
        while p < low:
            p += 12
        while p > high:
            p -= 12
        fitted.append((max(low, p), start, dur))
    return fitted
