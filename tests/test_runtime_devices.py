"""Devices through their real drivers: a PulseAudio null sink as the microphone, and a GStreamer RTSP
server killed and restarted mid-stream. Skipped, with the reason, where the tools are missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import SourceSpec

from .helpers import ffmpeg, free_port

pytestmark = [
    pytest.mark.slow,  # PulseAudio, an RTSP server, child processes
    pytest.mark.timeout(180),  # threads, sockets and child processes: never hang CI
]

REPO = Path(__file__).resolve().parents[1]
RTSP_SERVER = REPO / "streamrec" / "tools" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with the GStreamer bindings (not the venv's)


def _wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


# --- microphone through a PulseAudio null sink ---------------------------------------------------


@pytest.fixture
def pulse_env() -> Iterator[dict[str, str]]:
    """A private PulseAudio server whose default source is the monitor of a 16 kHz mono null sink."""
    missing = [tool for tool in ("pulseaudio", "pacat") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: pulseaudio pulseaudio-utils)")
    runtime_dir = tempfile.mkdtemp(prefix="pa")  # short: the socket path must fit in 108 bytes
    os.chmod(runtime_dir, 0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": runtime_dir, "HOME": runtime_dir}
    server = subprocess.Popen(
        [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
            "-L", "module-native-protocol-unix",
            "-L", "module-null-sink sink_name=vsink rate=16000 channels=1",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if not _wait_for(lambda: Path(runtime_dir, "pulse", "native").exists() or server.poll() is not None, 10):
            pytest.skip("pulseaudio did not start within 10 s")
        if server.poll() is not None:
            pytest.skip(f"pulseaudio could not start: {server.stderr.read()[-300:] if server.stderr else ''}")
        yield env
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(runtime_dir, ignore_errors=True)


# Run in a fresh process: sounddevice starts PortAudio at import, which must find the server.
MICROPHONE_SCRIPT = """
import json, sys, threading, time
from pathlib import Path
import numpy as np
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import CaptureFormat, SourceSpec
from streamrec.runtime.sources.microphone import MicrophoneSource
from streamrec.runtime.types import AudioChunk

# 1. the source alone: what reaches the ring is the tone played into the sink
items, stop = [], threading.Event()
source = MicrophoneSource(None, CaptureFormat(16000))
source.prepare()
thread = threading.Thread(target=source.run, args=(items.append, stop))
thread.start()
deadline = time.monotonic() + 20  # a loaded machine can take seconds to start the stream
while time.monotonic() < deadline:
    captured = sum(len(i.samples) for i in list(items) if isinstance(i, AudioChunk))
    if captured >= 24000:  # 1.5 s at 16 kHz
        break
    time.sleep(0.05)
stop.set()
thread.join(5)
chunks = [i for i in items if isinstance(i, AudioChunk)]
audio = np.concatenate([c.samples for c in chunks])[-16000:]
peak = float(np.fft.rfftfreq(len(audio), 1 / 16000)[np.argmax(np.abs(np.fft.rfft(audio)))])
rms = float(np.sqrt(np.mean(audio ** 2)))
starts = [c.media_time for c in chunks]

# 2. the whole runtime on the microphone
events = []
spec = SourceSpec("microphone", "", "mic")
options = RuntimeOptions(bundle=Path(sys.argv[1]), duration=3.0)
summary = Runtime([spec], options, sinks=[CallbackSink(events.append)]).run()
print(json.dumps({"peak": peak, "rms": rms, "rate": source.rate, "starts": starts, "events": events,
                  "p50": summary.streams["mic"].latency_p50_ms}))
"""


def test_microphone_path_through_a_pulseaudio_null_sink(
    pulse_env: dict[str, str], runtime_bundle: Path, tmp_path: Path
) -> None:
    tone = tmp_path / "tone.raw"  # 660 Hz at amplitude 1/8 (RMS 0.088), raw 16 kHz samples, longer than the run
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=16000:duration=30", "-f", "s16le", "-ac", "1", str(tone)
    )
    player = subprocess.Popen(
        ["pacat", "--playback", "--device=vsink", "--format=s16le", "--rate=16000", "--channels=1", str(tone)],
        env=pulse_env,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", MICROPHONE_SCRIPT, str(runtime_bundle)],
            cwd=REPO, env={**pulse_env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        player.terminate()
        player.wait(5)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the microphone hears the tone, in real time, as consecutive chunks at the model rate
    assert result["rate"] == 16000 and result["peak"] == pytest.approx(660, abs=2)
    assert result["rms"] == pytest.approx(0.088, rel=0.1)
    assert np.all(np.diff(result["starts"]) > 0) and 1.0 < result["starts"][-1] < 2.0  # ~1.5 s of capture
    # and through the runtime: audio-only predictions every 0.5 s, stamped on the stream's clock
    events = result["events"]
    assert events[0]["state"] == "started" and events[-1]["state"] == "ended"
    predictions = [e for e in events if e["type"] == "prediction"]
    assert [p["t"] for p in predictions][:3] == [1.0, 1.5, 2.0]
    assert all(p["modalities"]["video"] is None and p["modalities"]["audio"] for p in predictions)
    assert result["p50"] < 500  # ms from capture to emission


def test_live_command_on_the_microphone_reports_the_right_class(pulse_env: dict[str, str], tmp_path: Path) -> None:
    """`streamrec live --mic` with the bundled model: a violin played into the virtual microphone."""
    from streamrec.core.assets import DEFAULT_BUNDLE, EXAMPLE_CLIP

    if not (DEFAULT_BUNDLE / "manifest.json").exists():
        pytest.skip("the bundled model is not installed")
    violin = tmp_path / "violin.raw"  # the example clip opens with 6 s of violin
    ffmpeg("-t", "6", "-i", str(EXAMPLE_CLIP), "-f", "s16le", "-ac", "1", "-ar", "16000", str(violin))
    # Loop it: on a loaded machine the command may take several seconds to open the microphone.
    violin.write_bytes(violin.read_bytes() * 8)
    events = tmp_path / "events.jsonl"
    player = subprocess.Popen(
        ["pacat", "--playback", "--device=vsink", "--format=s16le", "--rate=16000", "--channels=1", str(violin)],
        env=pulse_env,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "streamrec", "live", "--mic", "--duration", "5", "--no-view",
             "--jsonl", str(events)],
            cwd=REPO, env={**pulse_env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        player.terminate()
        player.wait(5)
    assert done.returncode == 0, done.stderr[-2000:]
    predictions = [e for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "prediction"]
    assert len(predictions) >= 4
    assert all(p["modalities"]["video"] is None for p in predictions)  # no camera: video is null
    assert any(p["active"] == ["violin"] for p in predictions), [p["active"] for p in predictions]
    assert not any(set(p["active"]) - {"violin"} for p in predictions)


# --- RTSP with a GStreamer server that dies and comes back ---------------------------------------

GST_PROBE = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
needed = ("videotestsrc", "x264enc", "rtph264pay", "audiotestsrc", "avenc_aac", "rtpmp4gpay")
missing = [e for e in needed if not Gst.ElementFactory.find(e)]
print(" ".join(missing))
"""


def _rtsp_server_missing() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", GST_PROBE], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return "GStreamer RTSP server bindings missing (Debian: python3-gi gir1.2-gst-rtsp-server-1.0)"
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()} (gstreamer1.0-plugins-ugly, gstreamer1.0-libav)"
    return None


def _start_rtsp_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(port), "--freq", "660"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    line = server.stdout.readline() if server.stdout else ""
    if not line.startswith("ready"):
        server.kill()
        raise RuntimeError(f"the RTSP server did not start: {line}")
    return server


def test_rtsp_stream_reconnects_after_the_server_restarts(runtime_bundle: Path) -> None:
    reason = _rtsp_server_missing()
    if reason:
        pytest.skip(reason)
    port = free_port()
    server = _start_rtsp_server(port)
    events: list[dict] = []
    runtime = Runtime(
        [SourceSpec("url", f"rtsp://127.0.0.1:{port}/test", "cam")],
        RuntimeOptions(bundle=runtime_bundle),
        sinks=[CallbackSink(events.append)],
    )
    thread = threading.Thread(target=runtime.run)
    thread.start()

    def predictions() -> list[dict]:
        return [e for e in list(events) if e["type"] == "prediction"]

    def states() -> list[str]:
        return [e["state"] for e in list(events) if e["type"] == "status"]

    try:
        assert _wait_for(lambda: len(predictions()) >= 2, 30), f"no predictions: {events[-3:]}"
        server.send_signal(signal.SIGKILL)  # the camera dies mid-stream
        server.wait(5)
        assert _wait_for(lambda: "reconnecting" in states(), 15), states()
        before = len(predictions())
        server = _start_rtsp_server(port)
        assert _wait_for(lambda: states().count("started") >= 2, 20), states()
        assert _wait_for(lambda: len(predictions()) >= before + 2, 20), "no predictions after reconnecting"
    finally:
        runtime.stop()
        thread.join(10)
        server.kill()
        server.wait(5)
    statuses = [e for e in events if e["type"] == "status"]
    assert statuses[0]["state"] == "started" and statuses[-1] == {
        "type": "status",
        "stream": "cam",
        "state": "ended",
        "detail": "stopped",
    }
    recovered = next(e for e in statuses[1:] if e["state"] == "started")
    assert recovered["detail"].startswith("reconnected")
    after = predictions()[before:]
    assert all(p["modalities"]["audio"] is not None for p in after)
    assert any(p["modalities"]["video"] is not None for p in after)
    assert after[0]["t"] > predictions()[before - 1]["t"]  # the stream's clock keeps running across the outage
