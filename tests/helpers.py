"""Plain helpers the tests call: real media made with ffmpeg's lavfi sources, labels files, the tiny
corpus's options, and the reference (offline) computations the live runtime's tests compare against.

Fixtures live in tests/conftest.py (pytest finds them); this module holds no fixture.
"""

from __future__ import annotations

import csv
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.core.audio_setup import AudioSetup, instrument_probabilities, window_probabilities
from streamrec.core.bundle import Bundle
from streamrec.core.features import FrameConfig, LogMel, frames_to_tensor, preprocess_frame
from streamrec.core.media import decode_audio, decode_frames
from streamrec.core.models import load_network
from streamrec.core.scores import fusion_inputs
from streamrec.runtime.types import Frame
from streamrec.runtime.windowing import WindowSpec, frames_for_update

# --- media made with ffmpeg ---------------------------------------------------------------------

CLIP_SECONDS = 3  # duration of every generated clip
SOURCE_RATE = 44100  # Hz, sample rate of the generated audio (resampled to 16 kHz by the reader)
VIDEO_SIZE = "320x240"  # width x height of the generated video
VIDEO_FPS = 25

H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "96k"]


def ffmpeg(*args: str) -> None:
    """Runs ffmpeg quietly, failing the test with its error output."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {result.stderr.strip()}")


def sine_input(frequency: float) -> list[str]:
    """A lavfi sine source of CLIP_SECONDS at SOURCE_RATE."""
    return ["-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate={SOURCE_RATE}:duration={CLIP_SECONDS}"]


def video_input(source: str, options: str = "") -> list[str]:
    """A lavfi video source such as testsrc2, or color with options "c=blue"."""
    settings = ":".join(filter(None, [options, f"size={VIDEO_SIZE}", f"rate={VIDEO_FPS}", f"duration={CLIP_SECONDS}"]))
    return ["-f", "lavfi", "-i", f"{source}={settings}"]


def make_av_clip(
    path: Path, frequency: float, video: str = "testsrc2", options: str = "", faststart: bool = True
) -> Path:
    """A 3 s .mp4 with H.264 video and an AAC sine; faststart puts the moov atom before the media data."""
    flags = ["-movflags", "+faststart"] if faststart else []
    ffmpeg(*video_input(video, options), *sine_input(frequency), *H264, *AAC, "-shortest", *flags, str(path))
    return path


def truncate(path: Path, share: float) -> Path:
    """Cuts a file to `share` of its bytes, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return path


def write_labels(root: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = ("path", "label", "split")) -> Path:
    """Writes root/labels.csv with `header` and `rows`."""
    path = root / "labels.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# A corpus the real builder makes in seconds: 3 classes x 4 clips of 3 s (2 train, 1 val, 1 test each).
TINY_CORPUS_OPTIONS = ["--clips-per-class", "4", "--seconds", "3", "--classes", "violin,drums,piano", "--seed", "5"]

# --- the live runtime's small bundle (conftest.runtime_bundle) and its reference computations ---

CLASSES = ("drums", "piano", "violin")
K_FRAMES = 3
# The kernel shapes of the musicnn wheel's MTT_musicnn checkpoint (TensorFlow's HWIO), which size the tagger
MUSICNN_KERNELS = {
    "conv2d/kernel": [7, 38, 1, 204],
    "conv2d_1/kernel": [7, 67, 1, 204],
    "conv2d_2/kernel": [128, 1, 1, 51],
    "conv2d_3/kernel": [64, 1, 1, 51],
    "conv2d_4/kernel": [32, 1, 1, 51],
    "conv2d_5/kernel": [7, 561, 1, 64],
    "conv2d_6/kernel": [7, 64, 1, 64],
    "conv2d_7/kernel": [7, 64, 1, 64],
    "dense/kernel": [1506, 200],
    "dense_1/kernel": [200, 50],
}


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


# --- network ------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port free right now (for a child process that must be told its port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a Triton server (PyTriton, in .venv-triton) --------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
TRITON_PYTHON = REPO / ".venv-triton" / "bin" / "python"  # made by scripts/install.sh: PyTriton needs numpy<2
TRITON_SERVER = REPO / "streamrec" / "tools" / "triton_server.py"


class TritonServer:
    """streamrec/tools/triton_server.py serving a model repository on loopback, as a child process group (the
    script, the tritonserver it starts and its Python stubs), so that kill() takes the server down at once."""

    def __init__(self, repository: Path, log: Path) -> None:
        self.repository, self.log = repository, log
        self.port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> None:
        """Starts it on the same ports as before and waits for its "ready" line (every model loaded)."""
        command = [str(TRITON_PYTHON), str(TRITON_SERVER), str(self.repository)]
        command += ["--grpc-port", str(self.port), "--http-port", str(self.http_port)]
        # A killed server leaves its workspace (a copy of tritonserver) behind: keep it beside the log.
        self.starts += 1
        command += ["--workspace", str(self.log.parent / f"workspace-{self.starts}")]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
            )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._forward, args=(self.process, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if "ready grpc://" in lines.get(timeout=0.5):  # tritonserver writes to the same pipe
                    return
            except queue.Empty:
                if self.process.poll() is not None:
                    break
        self.stop()
        pytest.fail(f"the Triton test server did not start: {self.log.read_text()[-2000:]}")

    def _forward(self, process: subprocess.Popen, lines: queue.Queue[str]) -> None:
        """The server's stdout (tritonserver's log) into the log file, and each line to start()."""
        with self.log.open("a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                lines.put(line)

    def kill(self) -> None:
        """SIGKILL to the whole group, as a crash or a pulled cable would take it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            time.sleep(0.2)  # the group's other processes die a moment after its leader

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever of the group outlived a clean stop (PyTriton leaves Python backend stubs behind)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
