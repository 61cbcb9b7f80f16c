"""Tests of streamrec.core.dataset (labels.csv, decoding, the decode cache) and media.FrameSampler on real clips."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

import streamrec.core.dataset as ds
from streamrec.core.dataset import (
    ClipCache,
    ClipRecord,
    DatasetError,
    DecodeSpec,
    decode_clip,
    encode_targets,
    load_dataset,
    read_labels,
)
from streamrec.core.errors import UserError
from streamrec.core.features import FrameConfig
from streamrec.core.media import FrameSampler, MediaError, resample

SR = 16000  # Hz, DecodeSpec's default
CLIP_SECONDS = 3  # duration of the clips conftest.media_dir makes
HEADER = ("path", "label", "split", "labels", "notes")
# Five good clips and five rows that must be skipped, each for its own reason.
ROWS = [
    ("clips/violin.mp4", "violin", "train", "violin;piano", "testsrc2, 440 Hz"),
    ("clips/piano.mp4", "piano", "train", "", ""),
    ("clips/flute.wav", "flute", "val", "", "audio only"),
    ("clips/cello.m4a", "cello", "test", "", "audio only"),
    ("clips/drums.mp4", "drums", "train", "", "video only"),
    ("clips/truncated.mp4", "guitar", "train", "", ""),
    ("clips/cut_moov.mp4", "guitar", "val", "", ""),
    ("clips/missing.mp4", "violin", "train", "", ""),
    ("clips/violin.mp4", "kazoo", "train", "", ""),
    ("clips/subtitles.mp4", "organ", "test", "", ""),
]
GOOD = ["clips/violin.mp4", "clips/piano.mp4", "clips/flute.wav", "clips/cello.m4a", "clips/drums.mp4"]
BROKEN = ["clips/truncated.mp4", "clips/cut_moov.mp4", "clips/subtitles.mp4"]  # files that fail to decode


@pytest.fixture
def dataset(make_dataset) -> Path:
    return make_dataset(ROWS, HEADER)


def peak_frequency(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * sample_rate / len(audio))


def counting_decoder(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wraps streamrec.core.dataset.decode_clip; returns the list of rel_paths it gets called with."""
    calls: list[str] = []
    real = ds.decode_clip

    def counting(record: ClipRecord, spec: DecodeSpec) -> ds.Clip:
        calls.append(record.rel_path)
        return real(record, spec)

    monkeypatch.setattr(ds, "decode_clip", counting)
    return calls


# --- read_labels -------------------------------------------------------------------------------


def test_read_labels_parses_rows(dataset: Path) -> None:
    records, skipped = read_labels(dataset)
    assert [r.rel_path for r in records] == GOOD + BROKEN
    violin = records[0]
    assert violin.path == dataset.absolute() / "clips" / "violin.mp4"
    assert violin.path.is_absolute()
    assert (violin.label, violin.labels, violin.split) == ("violin", ("violin", "piano"), "train")
    assert records[1].labels == ("piano",)  # empty `labels` cell: the label alone
    assert [r.split for r in records[:5]] == ["train", "train", "val", "test", "train"]
    # File and label problems are found without decoding anything.
    assert [(s.path, s.reason) for s in skipped] == [
        ("clips/missing.mp4", "file not found"),
        ("clips/violin.mp4", "unknown label 'kazoo'"),
    ]


def test_read_labels_without_labels_column_and_with_bom(make_dataset) -> None:
    root = make_dataset([("clips/flute.wav", "flute", "val"), (" clips/drums.mp4 ", "drums", "train")])
    # A spreadsheet's byte-order mark must not hide the `path` column.
    text = (root / "labels.csv").read_text(encoding="utf-8")
    (root / "labels.csv").write_text("\ufeff" + text, encoding="utf-8")
    records, skipped = read_labels(root)
    assert skipped == []
    assert [(r.rel_path, r.labels) for r in records] == [
        ("clips/flute.wav", ("flute",)),
        ("clips/drums.mp4", ("drums",)),
    ]


def test_read_labels_puts_predominant_first_and_checks_labels_entries(make_dataset) -> None:
    rows = [
        ("clips/violin.mp4", "violin", "train", "piano; violin;piano"),
        ("clips/piano.mp4", "piano", "train", "piano;kazoo"),
        ("clips/drums.mp4", "drums", "training", ""),
    ]
    root = make_dataset(rows, ("path", "label", "split", "labels"))
    records, skipped = read_labels(root)
    assert [r.labels for r in records] == [("violin", "piano")]
    assert [(s.path, s.reason) for s in skipped] == [
        ("clips/piano.mp4", "unknown label 'kazoo' in labels"),
        ("clips/drums.mp4", "unknown split 'training'"),
    ]


def test_read_labels_filters_splits_silently(dataset: Path) -> None:
    records, skipped = read_labels(dataset, splits=["test"])
    assert [r.rel_path for r in records] == ["clips/cello.m4a", "clips/subtitles.mp4"]
    assert skipped == []  # the bad rows are all in other splits
    records, _ = read_labels(dataset, splits=("train", "val"))
    assert {r.split for r in records} == {"train", "val"}
    assert len(records) == 6


def test_read_labels_with_custom_classes(dataset: Path) -> None:
    records, skipped = read_labels(dataset, classes=("violin", "piano", "kazoo"), splits=["train"])
    assert [(r.rel_path, r.label) for r in records] == [("clips/violin.mp4", "violin"), ("clips/piano.mp4", "piano")]
    reasons = [(s.path, s.reason) for s in skipped]
    assert ("clips/drums.mp4", "unknown label 'drums'") in reasons
    assert ("clips/violin.mp4", "duplicate of line 2") in reasons  # a file counts once, whatever its label


def test_read_labels_missing_required_column(make_dataset) -> None:
    root = make_dataset([("clips/flute.wav", "flute")], header=("path", "label"))
    with pytest.raises(DatasetError, match="required column.*split"):
        read_labels(root)


def test_read_labels_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match="is empty"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_bytes(b"path,label,split\n\xff\xfe,x,train\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_labels(tmp_path)


def test_dataset_not_a_directory(tmp_path: Path) -> None:
    assert issubclass(DatasetError, UserError)
    with pytest.raises(DatasetError, match="does not exist"):
        read_labels(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "file", cache=ClipCache(tmp_path / "cache"), progress=False)
    (tmp_path / "labels.csv").write_text("path,label,split\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="unknown split 'tset'"):
        load_dataset(tmp_path, split="tset", cache=ClipCache(tmp_path / "cache"), progress=False)


# --- decoding ----------------------------------------------------------------------------------


def test_load_dataset_skips_bad_rows_and_decodes_the_rest(dataset: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamrec.core.dataset")
    loaded = load_dataset(dataset, cache=ClipCache(tmp_path / "cache"), progress=False)
    assert loaded.root == dataset.absolute()
    assert [c.record.rel_path for c in loaded.clips] == GOOD
    reasons = {s.path: s.reason for s in loaded.skipped if s.path != "clips/violin.mp4"}
    assert len(loaded.skipped) == 5
    assert reasons["clips/missing.mp4"] == "file not found"
    assert reasons["clips/truncated.mp4"].startswith("truncated ")
    assert "cannot open" in reasons["clips/cut_moov.mp4"]
    assert "no audio or video stream" in reasons["clips/subtitles.mp4"]
    assert ("clips/violin.mp4", "unknown label 'kazoo'") in [(s.path, s.reason) for s in loaded.skipped]

    violin = loaded.clips[0]
    assert violin.audio.dtype == np.float32 and violin.audio.ndim == 1
    # AAC pads the last frame of 1024 source samples: up to ~23 ms more than the 3 s.
    assert abs(len(violin.audio) - CLIP_SECONDS * SR) < 0.05 * SR
    assert violin.frames.shape == (3, 224, 224, 3) and violin.frames.dtype == np.uint8
    np.testing.assert_allclose(violin.frame_times, [0.0, 1.0, 2.0], atol=1e-6)

    piano = loaded.clips[1]  # a blue picture: RGB channel order must be right
    mean_rgb = piano.frames.reshape(-1, 3).mean(axis=0)
    assert mean_rgb[2] > 200 and mean_rgb[0] < 40 and mean_rgb[1] < 40

    messages = [r.getMessage() for r in caplog.records]
    assert "skipped clips/missing.mp4 (labels.csv line 9): file not found" in messages
    assert "5 clips, 5 skipped" in messages
    assert sum(m.startswith("skipped ") for m in messages) == 5


def test_load_dataset_split_selection(dataset: Path, tmp_path: Path) -> None:
    loaded = load_dataset(dataset, split="test", cache=ClipCache(tmp_path / "cache"), progress=False)
    assert [c.record.rel_path for c in loaded.clips] == ["clips/cello.m4a"]
    assert [s.path for s in loaded.skipped] == ["clips/subtitles.mp4"]
    loaded = load_dataset(dataset, split="val,test", cache=ClipCache(tmp_path / "cache"), progress=False)
    assert [c.record.rel_path for c in loaded.clips] == ["clips/flute.wav", "clips/cello.m4a"]


def test_audio_only_and_video_only_clips(dataset: Path) -> None:
    records = {r.rel_path: r for r in read_labels(dataset)[0]}
    for name in ("clips/flute.wav", "clips/cello.m4a"):
        clip = decode_clip(records[name], DecodeSpec())
        assert clip.frames is None and clip.frame_times is None
        assert abs(len(clip.audio) - CLIP_SECONDS * SR) < 0.05 * SR
    drums = decode_clip(records["clips/drums.mp4"], DecodeSpec())
    assert drums.audio is None
    assert drums.frames.shape == (3, 224, 224, 3)


def test_decode_clip_without_streams_raises(dataset: Path) -> None:
    record = next(r for r in read_labels(dataset)[0] if r.rel_path == "clips/subtitles.mp4")
    with pytest.raises(MediaError, match="no audio or video stream"):
        decode_clip(record, DecodeSpec())


@pytest.mark.parametrize(
    ("name", "frequency"),
    [("clips/flute.wav", 440), ("clips/violin.mp4", 440), ("clips/piano.mp4", 880), ("clips/cello.m4a", 220)],
)
def test_resampled_sine_keeps_its_frequency(dataset: Path, name: str, frequency: float) -> None:
    record = next(r for r in read_labels(dataset)[0] if r.rel_path == name)
    audio = decode_clip(record, DecodeSpec()).audio
    assert peak_frequency(audio, SR) == pytest.approx(frequency, abs=5)
    # A full-scale-ish sine, not silence or clipping garbage.
    assert 0.05 < float(np.abs(audio).max()) <= 1.0


def test_resampling_an_empty_signal_gives_an_empty_signal() -> None:
    """Two of Fish Fillets NG's Dutch lines are Vorbis streams that decode to no sample: resampling the empty
    signal failed inside torchaudio and stopped a training run."""
    for rates in ((22050, 16000), (16000, 22050)):
        empty = resample(np.zeros(0, np.float32), *rates)
        assert empty.shape == (0,) and empty.dtype == np.float32


def test_decode_spec_changes_rates_and_sizes(dataset: Path) -> None:
    record = next(r for r in read_labels(dataset)[0] if r.rel_path == "clips/violin.mp4")
    clip = decode_clip(record, DecodeSpec(sample_rate=8000, frames=FrameConfig(fps=2.0, resize=128, crop=112)))
    assert abs(len(clip.audio) - CLIP_SECONDS * 8000) < 0.05 * 8000
    assert peak_frequency(clip.audio, 8000) == pytest.approx(440, abs=5)
    assert clip.frames.shape == (6, 112, 112, 3)
    # The first 25 fps frame at or after each 0.5 s tick.
    np.testing.assert_allclose(clip.frame_times, [0.0, 0.52, 1.0, 1.52, 2.0, 2.52], atol=1e-6)
    with pytest.raises(ValueError):
        DecodeSpec(sample_rate=0)


def test_targets(dataset: Path, tmp_path: Path) -> None:
    loaded = load_dataset(dataset, split="train", cache=ClipCache(tmp_path / "cache"), progress=False)
    indices, multi_hot = loaded.targets()
    classes = loaded.classes
    assert indices.tolist() == [classes.index("violin"), classes.index("piano"), classes.index("drums")]
    assert multi_hot.shape == (3, 13)
    assert multi_hot[0].nonzero()[0].tolist() == sorted([classes.index("violin"), classes.index("piano")])
    assert multi_hot.sum(axis=1).tolist() == [2.0, 1.0, 1.0]
    assert encode_targets([], classes)[1].shape == (0, 13)


# --- the cache ---------------------------------------------------------------------------------


def test_cache_hit_skips_decoding_and_returns_identical_arrays(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    cache = ClipCache(tmp_path / "cache")
    calls = counting_decoder(monkeypatch)
    first = load_dataset(dataset, cache=cache, progress=False)
    assert sorted(calls) == sorted(GOOD + BROKEN)

    calls.clear()
    second = load_dataset(dataset, cache=cache, progress=False)
    # Failures are not cached: only they are decoded again.
    assert sorted(calls) == ["clips/cut_moov.mp4", "clips/subtitles.mp4", "clips/truncated.mp4"]
    assert [c.record.rel_path for c in second.clips] == GOOD
    assert [(s.path, s.reason) for s in second.skipped] == [(s.path, s.reason) for s in first.skipped]
    for a, b in zip(first.clips, second.clips):
        assert a.record == b.record
        for name in ("audio", "frames", "frame_times"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)
    # Every file was written through a temporary name and renamed.
    assert not [p for p in cache.directory.rglob("*") if p.name.endswith(".tmp")]


def test_cache_hit_without_decoder(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    cache = ClipCache(tmp_path / "cache")
    first = load_dataset(dataset, split="val", cache=cache, progress=False)
    flute = next(c for c in first.clips if c.record.rel_path == "clips/flute.wav")
    os.remove(dataset / "clips" / "cut_moov.mp4")  # the only val row that would be decoded again

    def fail(record: ClipRecord, spec: DecodeSpec) -> ds.Clip:
        raise AssertionError(f"decoded {record.rel_path} despite the cache")

    monkeypatch.setattr(ds, "decode_clip", fail)
    second = load_dataset(dataset, split="val", cache=cache, progress=False)
    assert [c.record.rel_path for c in second.clips] == ["clips/flute.wav"]
    np.testing.assert_array_equal(second.clips[0].audio, flute.audio)


def test_cache_invalidated_by_touch_content_and_spec(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    cache = ClipCache(tmp_path / "cache")
    load_dataset(dataset, split="train", cache=cache, progress=False)
    calls = counting_decoder(monkeypatch)

    violin = dataset / "clips" / "violin.mp4"
    st = violin.stat()
    os.utime(violin, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    load_dataset(dataset, split="train", cache=cache, progress=False)
    assert sorted(calls) == ["clips/truncated.mp4", "clips/violin.mp4"]

    # Same mtime, different size: still a miss.
    calls.clear()
    piano = dataset / "clips" / "piano.mp4"
    st = piano.stat()
    with piano.open("ab") as fh:
        fh.write(b"\0" * 16)
    os.utime(piano, ns=(st.st_atime_ns, st.st_mtime_ns))
    load_dataset(dataset, split="train", cache=cache, progress=False)
    assert sorted(calls) == ["clips/piano.mp4", "clips/truncated.mp4"]

    calls.clear()
    loaded = load_dataset(dataset, split="train", spec=DecodeSpec(sample_rate=8000), cache=cache, progress=False)
    assert sorted(calls) == ["clips/drums.mp4", "clips/piano.mp4", "clips/truncated.mp4", "clips/violin.mp4"]
    assert abs(len(loaded.clips[0].audio) - CLIP_SECONDS * 8000) < 0.05 * 8000


def test_damaged_cache_entry_is_decoded_again(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    cache = ClipCache(tmp_path / "cache")
    record = next(r for r in read_labels(dataset)[0] if r.rel_path == "clips/violin.mp4")
    clip = decode_clip(record, DecodeSpec())
    assert cache.put(clip, DecodeSpec())
    frames_file = next(cache.directory.rglob("frames.npy"))
    frames_file.write_bytes(frames_file.read_bytes()[:1000])
    assert cache.get(record, DecodeSpec()) is None
    loaded = load_dataset(dataset, split="train", cache=cache, progress=False)
    np.testing.assert_array_equal(loaded.clips[0].frames, clip.frames)
    assert cache.get(record, DecodeSpec()) is not None


def test_default_cache_dir(tmp_path: Path, monkeypatch, dataset: Path) -> None:
    monkeypatch.setenv("STREAMREC_CACHE", str(tmp_path / "sc"))
    assert ClipCache().directory == tmp_path / "sc" / "decoded"
    load_dataset(dataset, split="test", progress=False)  # cache=None: the default cache
    assert len(list((tmp_path / "sc" / "decoded").rglob("audio.npy"))) == 1  # cello.m4a

    monkeypatch.delenv("STREAMREC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ClipCache().directory == tmp_path / "xdg" / "streamrec" / "decoded"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ClipCache().directory == tmp_path / "home" / ".cache" / "streamrec" / "decoded"


@pytest.mark.slow  # starts worker processes
def test_parallel_decoding_matches_serial_order(dataset: Path, tmp_path: Path) -> None:
    serial = load_dataset(dataset, cache=ClipCache(tmp_path / "serial"), progress=False)
    parallel = load_dataset(dataset, cache=ClipCache(tmp_path / "parallel"), workers=2, progress=False)
    assert [c.record.rel_path for c in parallel.clips] == GOOD
    assert sorted((s.path, s.reason) for s in parallel.skipped) == sorted((s.path, s.reason) for s in serial.skipped)
    for a, b in zip(serial.clips, parallel.clips):
        for name in ("audio", "frames", "frame_times"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError):
        load_dataset(dataset, workers=0, progress=False)


def test_progress_bar_runs(dataset: Path, tmp_path: Path) -> None:
    loaded = load_dataset(dataset, split="val", cache=ClipCache(tmp_path / "cache"), progress=True)
    assert [c.record.rel_path for c in loaded.clips] == ["clips/flute.wav"]


# --- media.FrameSampler ------------------------------------------------------------------------


def test_frame_sampler_keeps_one_frame_per_second() -> None:
    sampler = FrameSampler(1.0)
    times = [k / 25 for k in range(3 * 25)]
    kept = [t for t in times if sampler.take(t)]
    assert kept == pytest.approx([0.0, 1.0, 2.0])


def test_frame_sampler_ntsc_rate_and_tolerance() -> None:
    sampler = FrameSampler(1.0)
    times = [k * 1001 / 30000 for k in range(90)]  # 29.97 fps
    kept = [t for t in times if sampler.take(t)]
    assert kept == pytest.approx([0.0, 1.001, 2.002])
    sampler.reset()
    assert [sampler.take(t) for t in (0.0, 0.5, 0.9995, 1.5)] == [True, False, True, False]


def test_frame_sampler_gap_skips_ticks() -> None:
    sampler = FrameSampler(1.0)
    times = [0.0, 0.5, 2.5, 2.9, 3.0, 3.5, 4.0]
    assert [t for t in times if sampler.take(t)] == [0.0, 2.5, 3.0, 4.0]
    sampler.reset()
    assert sampler.take(0.0)
    with pytest.raises(ValueError):
        FrameSampler(0)
