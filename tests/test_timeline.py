"""Scoring a long clip's live predictions against its timeline (streamrec.train.timeline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.core.errors import UserError
from streamrec.train.timeline import BACKGROUND, Segment, Timeline, combine, load_timelines, score_timeline

TIMELINE = Timeline(
    "long/a.mp4",
    (Segment("violin", 0, 10), Segment(BACKGROUND, 10, 20), Segment("piano", 20, 30), Segment("drums", 30, 40)),
)


def updates(active_at) -> list[tuple[float, list[str]]]:
    return [(t / 2, active_at(t / 2)) for t in range(1, 81)]  # every 0.5 s, media time 0.5 .. 40


def test_a_perfect_run_scores_zero_errors_and_instant_switches() -> None:
    def truth(t: float) -> list[str]:
        return [s.label for s in TIMELINE.segments if s.start < t <= s.end and s.label != BACKGROUND]

    score = score_timeline(TIMELINE, updates(truth))
    assert score.wrong_active == 0 and score.any_active == 0 and score.missed == 0
    assert score.changes == 3 and score.switch_seconds == [0.5, 0.5]  # piano and drums; violin starts the stream
    # updates less than 2 s after a change are not scored: 3 of each later segment's 20 (0.5, 1.0, 1.5 s)
    assert score.music_updates == 20 + 17 + 17 and score.background_updates == 17


def test_wrong_classes_lit_background_and_missed_changes_are_counted() -> None:
    def sticky_violin(t: float) -> list[str]:
        return ["violin"] if t <= 25 else ["violin", "drums"] if t > 33 else ["violin"]

    score = score_timeline(TIMELINE, updates(sticky_violin))
    assert score.background_share == 1.0  # violin stays on through the background
    assert score.missed == 1  # piano never turns on
    assert score.switch_seconds == [pytest.approx(3.5)]  # drums at 33.5 s, 3.5 s after its change
    summary = score.summary()
    assert summary["switch_median_seconds"] == pytest.approx(3.5) and 0 < summary["wrong_share"] < 1
    both = combine([score, score])
    assert both.missed == 2 and both.music_updates == 2 * score.music_updates


def test_timelines_file_round_trip_and_a_bad_one_is_a_user_error(tmp_path: Path) -> None:
    assert load_timelines(tmp_path) == []
    (tmp_path / "timelines.json").write_text(
        json.dumps([{"clip": "long/a.mp4", "segments": [{"label": "violin", "start": 0, "end": 10}]}])
    )
    assert load_timelines(tmp_path) == [Timeline("long/a.mp4", (Segment("violin", 0.0, 10.0),))]
    (tmp_path / "timelines.json").write_text(
        json.dumps([{"clip": "a.mp4", "split": "val", "segments": []}, {"clip": "b.mp4", "segments": []}])
    )
    assert [t.clip for t in load_timelines(tmp_path, ["test"])] == ["b.mp4"]  # b has no split: always in
    assert [t.clip for t in load_timelines(tmp_path, ["val", "test"])] == ["a.mp4", "b.mp4"]
    (tmp_path / "timelines.json").write_text('{"clip": 3}')
    with pytest.raises(UserError, match="timelines"):
        load_timelines(tmp_path)
