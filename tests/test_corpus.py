"""`streamrec data build`: a real (tiny) build with the real tools, its determinism, splits and errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamrec.core.classes import DEFAULT_CLASSES
from streamrec.core.dataset import ClipCache, dataset_classes, load_dataset, read_labels
from streamrec.core.media import decode_audio
from streamrec.train.corpus.build import BuildOptions, gather_sources, plan_clips, split_ids
from streamrec.train.corpus.sources import check_sources

from .helpers import TINY_CORPUS_OPTIONS as TINY

pytestmark = pytest.mark.skipif(bool(check_sources()), reason="training sources missing: run scripts/install.sh")


def streamrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrec", *args], capture_output=True, text=True, timeout=600)


def rows(out: Path) -> list[dict]:
    with open(out / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # tiny_corpus
def test_build_writes_every_clip_in_the_contract_layout(tiny_corpus: Path) -> None:
    table = rows(tiny_corpus)
    assert len(table) == 12
    assert {r["label"] for r in table} == {"violin", "drums", "piano"}
    assert {"path", "label", "split", "labels"} <= set(table[0])
    records, skipped = read_labels(tiny_corpus)
    assert len(records) == 12 and skipped == []
    assert dataset_classes(tiny_corpus) == ("drums", "piano", "violin")  # taxonomy order, as training uses it
    readme = (tiny_corpus / "README.md").read_text()
    assert "| violin |" in readme and "Sources and licences" in readme and "fluid-soundfont-gm" in readme
    for name in ("preview_frames.png", "preview_logmel.png"):
        image = cv2.imread(str(tiny_corpus / name))
        assert image is not None and image.shape[0] > 150 and image.std() > 10


@pytest.mark.slow  # tiny_corpus
def test_every_clip_opens_in_ffprobe_and_opencv(tiny_corpus: Path) -> None:
    for row in rows(tiny_corpus):
        path = tiny_corpus / row["path"]
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        kinds = sorted(s["codec_type"] for s in json.loads(probe.stdout)["streams"])
        expected = sorted(k for k, flag in (("audio", row["has_audio"]), ("video", row["has_video"])) if flag == "1")
        assert kinds == expected, path
        if row["has_video"] == "1":
            assert path.suffix == ".mp4"
            capture = cv2.VideoCapture(str(path))
            ok, frame = capture.read()
            capture.release()
            assert ok and frame.shape == (240, 320, 3), path


@pytest.mark.slow  # tiny_corpus
def test_clips_decode_with_the_reader(tiny_corpus: Path, tmp_path: Path) -> None:
    loaded = load_dataset(tiny_corpus, cache=ClipCache(tmp_path / "cache"), progress=False)
    assert len(loaded.clips) == 12 and loaded.skipped == []
    for clip in loaded.clips:
        if clip.audio is not None:
            assert abs(len(clip.audio) - 3 * 16000) < 0.05 * 16000
            assert 0.003 < np.sqrt(np.mean(clip.audio**2)) < 1.0  # audible
        if clip.frames is not None:
            assert clip.frames.shape == (3, 224, 224, 3)


@pytest.mark.slow  # tiny_corpus, and builds it again
def test_same_seed_and_workers_same_corpus(tiny_corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    done = streamrec("data", "build", str(again), *TINY, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert (again / "labels.csv").read_bytes() == (tiny_corpus / "labels.csv").read_bytes()
    for row in rows(again):
        if row["has_audio"] == "1":
            first = decode_audio(tiny_corpus / row["path"], 16000)
            second = decode_audio(again / row["path"], 16000)
            np.testing.assert_array_equal(first, second)


@pytest.mark.slow  # tiny_corpus
def test_another_seed_gives_another_corpus(tiny_corpus: Path) -> None:
    options = BuildOptions(out=Path("unused"), clips_per_class=4, classes=("violin", "drums", "piano"), seed=6)
    other = plan_clips(options, gather_sources(options.classes, options.seed))
    assert [p.seed for p in other] != [int(r["seed"]) for r in rows(tiny_corpus)]


def test_a_share_of_voices_plays_a_recording_and_every_other_clip_is_planned_as_without_recordings() -> None:
    options = BuildOptions(out=Path("unused"), clips_per_class=60, seed=0, recordings_share=0.3)
    bank = gather_sources(options.classes, options.seed)
    assert {"cello", "flute", "guitar", "organ", "piano", "trumpet", "violin"} <= bank.samples.keys()
    with_recordings, without = plan_clips(options, bank), plan_clips(replace(options, recordings_share=0.0), bank)
    changed = 0
    for plan, before in zip(with_recordings, without, strict=True):
        # Only the sound source of a voice changes, and only to a recording of its own class.
        assert replace(plan, voices=()) == replace(before, voices=())
        for voice, planned in zip(plan.voices, before.voices, strict=True):
            assert replace(voice, source="") == replace(planned, source="")
            if voice.source != planned.source:
                assert voice.source.startswith("lmms:") and voice.class_name in bank.samples
                changed += voice.class_name == plan.class_name
    main_voices = sum(p.class_name in bank.samples for p in with_recordings)
    assert abs(changed / main_voices - 0.3) < 0.06
    assert without == plan_clips(options, replace(bank, samples={}))  # share 0: as without the recordings


def test_a_recording_plays_each_note_at_its_pitch_and_length(tmp_path: Path) -> None:
    from streamrec.train.corpus import audio as A

    rate, release = A.AUDIO_RATE, round(A.SAMPLER_RELEASE * A.AUDIO_RATE)
    sine = np.sin(2 * np.pi * 220 * np.arange(2 * rate) / rate).astype(np.float32)
    A.write_wav(tmp_path / "note.wav", 0.5 * sine)
    # At 60 bpm a beat is a second: an octave up for half a second, then the recording's own pitch.
    events = [(A.SAMPLER_CENTRE + 12, 0.0, 0.5, 127), (A.SAMPLER_CENTRE, 1.0, 0.5, 127)]
    out = A.render_sampled(events, 60.0, tmp_path / "note.wav", 2.0)
    assert out.shape == (2 * rate,)

    def pitch(part: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part))))
        return float(np.fft.rfftfreq(len(part), 1 / rate)[np.argmax(spectrum)])

    assert abs(pitch(out[: rate // 2 - release]) - 440) < 5
    assert abs(pitch(out[rate : 3 * rate // 2 - release]) - 220) < 5
    assert np.abs(out[rate // 2 + release + 10 : rate]).max() < 1e-6  # cut after its release
    assert np.abs(out[: rate // 4]).max() > 0.5  # peak-normalised, full velocity


def test_splits_share_no_melody_pattern_or_picture() -> None:
    options = BuildOptions(out=Path("unused"), clips_per_class=60, seed=0)
    plans = plan_clips(options, gather_sources(options.classes, options.seed))
    melodies, pictures = defaultdict(set), defaultdict(set)
    for plan in plans:
        melodies[plan.split] |= {voice.melody_id for voice in plan.voices}
        if plan.has_video:
            pictures[plan.split].add(plan.image_id)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not melodies[a] & melodies[b], (a, b)
        assert not pictures[a] & pictures[b], (a, b)
    counts = {s: sum(p.split == s for p in plans) for s in ("train", "val", "test")}
    assert counts == {"train": 13 * 42, "val": 13 * 9, "test": 13 * 9}  # 70/15/15 of 60, per class
    assert {p.class_name for p in plans} == set(DEFAULT_CLASSES)
    # The user-generated mix: some clips lack a stream, some have a quiet second instrument.
    n = len(plans)
    assert 0.02 < sum(not p.has_video for p in plans) / n < 0.12
    assert 0.02 < sum(not p.has_audio for p in plans) / n < 0.12
    assert 0.1 < sum(len(p.labels) > 1 for p in plans) / n < 0.3


def test_split_ids_partitions_70_15_15() -> None:
    parts = split_ids([f"id{i}" for i in range(100)], np.random.default_rng(0))
    assert [len(parts[s]) for s in ("train", "val", "test")] == [70, 15, 15]
    assert set().union(*parts.values()) == {f"id{i}" for i in range(100)}
    three = split_ids(["a", "b", "c"], np.random.default_rng(0))
    assert sorted(len(v) for v in three.values()) == [1, 1, 1]


@pytest.mark.slow  # `streamrec data build` in a child process
def test_unknown_class_exits_2_with_one_line(tmp_path: Path) -> None:
    done = streamrec("data", "build", str(tmp_path / "x"), "--classes", "violin,kazoo")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "kazoo" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.slow  # `streamrec data build` in a child process
def test_unwritable_out_exits_2_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    done = streamrec("data", "build", str(blocker / "corpus"), "--clips-per-class", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "Traceback" not in done.stderr


def test_help_explains_every_option() -> None:
    done = streamrec("data", "build", "--help")
    assert done.returncode == 0
    for option in ("--clips-per-class", "--seconds", "--classes", "--seed", "--workers", "--preview"):
        assert option in done.stdout


def test_independent_sources_count_shared_samples_and_drawing_variants_once() -> None:
    from streamrec.train.corpus.records import independent_sources

    rows = [
        {
            "label": "cello",
            "sound_source": "MuseScore_General.sf3:program 42",
            "image": "openclipart:m/cello_mo_01.svg",
        },
        {"label": "cello", "sound_source": "FluidR3_GM.sf2:program 42", "image": "openclipart:m/cello_mo_02.svg"},
        {"label": "violin", "sound_source": "MuseScore_General.sf3:program 40", "image": "emoji-google:1f3bb"},
        {"label": "violin", "sound_source": "FluidR3_GM.sf2:program 41", "image": "emoji-twitter:1f3bb"},
        {"label": "drums", "sound_source": "hydrogen:BJA_Pacific", "image": ""},
        {"label": "drums", "sound_source": "FluidR3_GM.sf2:kit 8", "image": "procedural:drums:1"},
    ]
    assert independent_sources(rows) == {
        "cello": {"sample_sets": 2, "picture_sources": 1},  # MuseScore's cello samples are its own
        "drums": {"sample_sets": 2, "picture_sources": 1},
        "violin": {"sample_sets": 1, "picture_sources": 2},  # MuseScore's violin reuses FluidR3's samples
    }


def test_training_icons_are_drawn_and_share_no_artist_with_field_dev_or_the_reserved_list() -> None:
    from streamrec.train.corpus.field import FIELD_ICONS
    from streamrec.train.corpus.images import load_rgba, source_images
    from streamrec.train.corpus.sources import ICON_SETS, INSTRUMENTS, LICENCES

    # field-dev's artists (their other sets included) and shared/DATA.md's reserved artwork
    held_out = {s for icons in FIELD_ICONS.values() for s, _ in icons} | {"streamline", "mdi", "openmoji", "fluent"}
    assert not [s for s in ICON_SETS if any(s.startswith(h) for h in held_out)]
    for name, spec in INSTRUMENTS.items():
        ids = {i.id for i in source_images(name)}
        for icon_set, icon in spec.icons:
            assert icon_set in ICON_SETS and f"icons-{icon_set}" in LICENCES
            assert f"icon-{icon_set}:{icon}" in ids, (name, icon_set, icon)
            rgba = load_rgba(f"icon-{icon_set}:{icon}")
            assert rgba.shape[2] == 4 and max(rgba.shape[:2]) == 256 and (rgba[..., 3] > 0).mean() > 0.05


def test_the_bundled_example_clip_is_the_one_data_example_builds_from_todays_sources() -> None:
    """`streamrec data example` must rebuild the committed demo clip: a change to the corpus's sources that moves its
    melodies, sounds or pictures has to ship a rebuilt clip (the description is compared; rendering is not needed)."""
    from streamrec.core.assets import EXAMPLE_SEGMENTS
    from streamrec.train.corpus.example import example_plans

    committed = json.loads(EXAMPLE_SEGMENTS.read_text())
    classes = tuple(s["class"] for s in committed["segments"])
    seconds = committed["seconds"] / len(classes)
    _, _, segments = example_plans(classes, seconds, committed["seed"])
    assert segments == committed["segments"]
