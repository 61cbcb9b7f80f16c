"""Shared fixtures: tiny real media clips made once per session with ffmpeg's lavfi sources."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

CLIP_SECONDS = 3  # duration of every generated clip
SOURCE_RATE = 44100  # Hz, sample rate of the generated audio (resampled to 16 kHz by the reader)
VIDEO_SIZE = "320x240"  # width x height of the generated video
VIDEO_FPS = 25


def ffmpeg(*args: str) -> None:
    """Runs ffmpeg quietly, failing the test with its error output."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {result.stderr.strip()}")


def _sine(frequency: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate={SOURCE_RATE}:duration={CLIP_SECONDS}"]


def _video(source: str, options: str = "") -> list[str]:
    """A lavfi video source such as testsrc2, or color with options "c=blue"."""
    settings = ":".join(filter(None, [options, f"size={VIDEO_SIZE}", f"rate={VIDEO_FPS}", f"duration={CLIP_SECONDS}"]))
    return ["-f", "lavfi", "-i", f"{source}={settings}"]


_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
_AAC = ["-c:a", "aac", "-b:a", "96k"]


def make_av_clip(
    path: Path, frequency: float, video: str = "testsrc2", options: str = "", faststart: bool = True
) -> Path:
    """A 3 s .mp4 with H.264 video and an AAC sine; faststart puts the moov atom before the media data."""
    flags = ["-movflags", "+faststart"] if faststart else []
    ffmpeg(*_video(video, options), *_sine(frequency), *_H264, *_AAC, "-shortest", *flags, str(path))
    return path


def truncate(path: Path, share: float) -> Path:
    """Cuts a file to `share` of its bytes, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return path


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder `clips/` of small real media files (built once; copy it before modifying anything).

    violin.mp4      testsrc2 video + 440 Hz sine (faststart)
    piano.mp4       blue video + 880 Hz sine (moov at the end)
    flute.wav       440 Hz sine, audio only, 44.1 kHz PCM
    cello.m4a       220 Hz sine, audio only, AAC
    drums.mp4       testsrc2 video only
    truncated.mp4   a faststart mp4 cut to 40 % of its bytes (header intact, media data cut)
    cut_moov.mp4    an mp4 with its moov at the end, cut to 40 % (header lost)
    subtitles.mp4   a subtitle stream only: neither audio nor video
    """
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    root = tmp_path_factory.mktemp("media")
    clips = root / "clips"
    clips.mkdir()
    make_av_clip(clips / "violin.mp4", 440)
    make_av_clip(clips / "piano.mp4", 880, video="color", options="c=blue", faststart=False)
    ffmpeg(*_sine(440), str(clips / "flute.wav"))
    ffmpeg(*_sine(220), *_AAC, str(clips / "cello.m4a"))
    ffmpeg(*_video("testsrc2"), *_H264, "-an", str(clips / "drums.mp4"))
    truncate(make_av_clip(clips / "truncated.mp4", 440, faststart=True), 0.4)
    truncate(make_av_clip(clips / "cut_moov.mp4", 440, faststart=False), 0.4)
    srt = root / "subtitles.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nhello\n", encoding="utf-8")
    ffmpeg("-i", str(srt), "-c:s", "mov_text", str(clips / "subtitles.mp4"))
    return root


def write_labels(root: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = ("path", "label", "split")) -> Path:
    """Writes root/labels.csv with `header` and `rows`."""
    path = root / "labels.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def make_dataset(media_dir: Path, tmp_path: Path):
    """Returns a function (rows, header) -> dataset root: a private copy of the clips plus a labels.csv."""

    def make(
        rows: Sequence[Sequence[str]], header: Sequence[str] = ("path", "label", "split"), name: str = "dataset"
    ) -> Path:
        root = tmp_path / name
        shutil.copytree(media_dir / "clips", root / "clips")
        write_labels(root, rows, header)
        return root

    return make


# A corpus the real builder makes in seconds: 3 classes x 4 clips of 3 s (2 train, 1 val, 1 test each).
TINY_CORPUS_OPTIONS = ["--clips-per-class", "4", "--seconds", "3", "--classes", "violin,drums,piano", "--seed", "5"]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Built once per session with `streamrec data build` (workers 2, previews on)."""
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamrec",
            "data",
            "build",
            str(out),
            *TINY_CORPUS_OPTIONS,
            "--workers",
            "2",
            "--preview",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_corpus: Path, tmp_path_factory) -> Path:
    """A bundle trained on the tiny corpus by `streamrec train all` (2 epochs: shapes and plumbing, not accuracy)."""
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamrec",
            "train",
            "all",
            "--data",
            str(tiny_corpus),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture
def streamrec_cli():
    """Runs `streamrec ARGS...` in this process and returns its exit code (the CLI always exits)."""
    from streamrec.cli import main

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        return exited.value.code

    return run
