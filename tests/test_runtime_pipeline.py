"""The live runtime end to end on real files: sources -> rings -> windows -> networks -> events.

Streamed predictions must equal the offline evaluation of the same windows of the same clip, fast
or in real time, through the real websocket server to a real client.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from streamrec.runtime.pipeline import CustomSource, RunSummary, Runtime, RuntimeOptions
from streamrec.runtime.ringbuffer import AudioRing
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import Emit, SourceSpec
from streamrec.runtime.types import AudioChunk, SourceInfo, SourceItem, StateChange

from .helpers import CLASSES, assert_matches_offline, offline_windows

pytestmark = pytest.mark.timeout(180)  # threads, sockets and child processes: never hang CI

REPO = Path(__file__).resolve().parents[1]


def run_collecting(specs: list[SourceSpec], **options) -> tuple[RunSummary, list[dict]]:
    events: list[dict] = []
    summary = Runtime(specs, RuntimeOptions(**options), sinks=[CallbackSink(events.append)]).run()
    return summary, events


def of_stream(events: list[dict], stream: str, kind: str | None = None) -> list[dict]:
    return [e for e in events if e["stream"] == stream and (kind is None or e["type"] == kind)]


def test_streamed_file_equals_offline_windows_and_jsonl(runtime_bundle: Path, runtime_clips: Path, tmp_path: Path):
    clip = runtime_clips / "av.mp4"
    jsonl = tmp_path / "out" / "events.jsonl"
    summary, events = run_collecting([SourceSpec("file", str(clip))], bundle=runtime_bundle, jsonl=jsonl)
    predictions = of_stream(events, "av", "prediction")
    expected = offline_windows(runtime_bundle, clip)
    assert len(expected) == 5  # 3 s: windows ending at 1.0, 1.5, ... 3.0 s
    assert_matches_offline(predictions, expected, CLASSES)
    assert [p["seq"] for p in predictions] == list(range(5))
    statuses = [(e["state"], e["detail"]) for e in of_stream(events, "av", "status")]
    assert statuses[0][0] == "started" and statuses[-1] == ("ended", "end of media")
    assert events[-1]["type"] == "status"  # the final state comes after the last prediction
    # the JSON-lines file holds the same objects, one per line, already flushed
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == events
    assert summary.exit_code == 0 and summary.streams["av"].updates == 5 and summary.streams["av"].skipped == 0
    first = predictions[0]
    assert set(first) == {"type", "stream", "seq", "t", "wall", "labels", "active", "modalities", "latency_ms"}
    assert [label["score"] for label in first["labels"]] == sorted(
        (lb["score"] for lb in first["labels"]), reverse=True
    )
    assert all(0 <= label["score"] <= 1 for label in first["labels"]) and first["latency_ms"] >= 0


@pytest.mark.slow  # real-time playback through a server
def test_file_through_the_websocket_server_to_a_client_in_real_time(runtime_bundle: Path, runtime_clips: Path):
    clip = runtime_clips / "av.mp4"
    runtime = Runtime(
        [SourceSpec("file", str(clip), realtime=True)],
        RuntimeOptions(bundle=runtime_bundle, ws=("127.0.0.1", 0), wait_clients=1),
    )
    done: list[RunSummary] = []
    thread = threading.Thread(target=lambda: done.append(runtime.run()))
    thread.start()
    try:
        assert runtime.ready.wait(60), "the runtime did not start"
        messages = []
        started = time.monotonic()
        with connect(f"ws://127.0.0.1:{runtime.ws_port}", open_timeout=10) as client:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    messages.append(json.loads(client.recv(timeout=15)))
        elapsed = time.monotonic() - started
    finally:
        runtime.stop()
        thread.join(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # a clean close frame: going away
    hello, events = messages[0], messages[1:]
    assert hello == {
        "type": "hello",
        "version": 1,
        "classes": list(CLASSES),
        "streams": [{"id": "av", "source": str(clip)}],
    }
    predictions = [e for e in events if e["type"] == "prediction"]
    assert_matches_offline(predictions, offline_windows(runtime_bundle, clip), CLASSES)
    assert elapsed >= 2.5  # paced: a 3 s clip takes about 3 s
    assert max(p["latency_ms"] for p in predictions) < 2000
    assert events[-1] == {"type": "status", "stream": "av", "state": "ended", "detail": "end of media"}
    assert done and done[0].streams["av"].skipped == 0


def test_several_streams_at_once_and_a_truncated_file_ends_only_its_stream(runtime_bundle: Path, runtime_clips: Path):
    names = ("av.mp4", "tone.wav", "pattern.mp4", "truncated.mp4", "short.wav")
    summary, events = run_collecting([SourceSpec("file", str(runtime_clips / n)) for n in names], bundle=runtime_bundle)
    ids = ("av", "tone", "pattern", "truncated", "short")
    assert {e["stream"] for e in events} == set(ids)
    for stream in ids:
        predictions = of_stream(events, stream, "prediction")
        assert [p["seq"] for p in predictions] == list(range(len(predictions)))
        assert of_stream(events, stream)[-1]["type"] == "status"  # the final state comes last
    assert len(of_stream(events, "av", "prediction")) == 5
    # audio only: the same windows as offline, no video scores
    tone = of_stream(events, "tone", "prediction")
    expected = offline_windows(runtime_bundle, runtime_clips / "tone.wav")
    assert all(e["video"] is None for e in expected)
    assert_matches_offline(tone, expected, CLASSES)
    # video only: one update per frame (1 fps), no audio scores
    pattern = of_stream(events, "pattern", "prediction")
    assert [p["t"] for p in pattern] == [0.0, 1.0, 2.0]
    assert all(p["modalities"]["audio"] is None and p["modalities"]["video"] is not None for p in pattern)
    # shorter than one window: one zero-padded window, as offline evaluation pads short clips
    assert [p["t"] for p in of_stream(events, "short", "prediction")] == [pytest.approx(0.4, abs=1e-3)]
    # the truncated file: what decoded is evaluated, then its stream ends in error; the others end normally
    truncated = of_stream(events, "truncated")
    assert truncated[-1]["state"] == "error" and "truncated" in truncated[-1]["detail"]
    assert summary.streams["truncated"].state == "error"
    assert all(summary.streams[s].state == "ended" for s in ids if s != "truncated")
    assert summary.exit_code == 2


def test_explain_adds_a_grad_cam_grid_and_overlay_to_predictions_with_frames(runtime_bundle: Path, runtime_clips):
    _, plain = run_collecting([SourceSpec("file", str(runtime_clips / "av.mp4"))], bundle=runtime_bundle)
    assert all("explain" not in e for e in plain)  # the contract's event, unless asked
    _, events = run_collecting([SourceSpec("file", str(runtime_clips / "av.mp4"))], bundle=runtime_bundle, explain=True)
    predictions = of_stream(events, "av", "prediction")
    assert predictions and all("explain" in p for p in predictions)
    for p in predictions:
        grid = np.array(p["explain"]["grid"])
        assert grid.shape == (7, 7) and grid.min() >= 0 and grid.max() <= 1
        assert p["explain"]["class"] == p["labels"][0]["name"]  # explains the top fused class
        assert p["explain"]["overlay"].startswith("data:image/jpeg;base64,")
    _, audio_only = run_collecting(
        [SourceSpec("file", str(runtime_clips / "tone.wav"))], bundle=runtime_bundle, explain=True
    )
    assert all("explain" not in e for e in audio_only)  # no frame, nothing to explain


def test_duration_limits_each_source(runtime_bundle: Path, runtime_clips: Path):
    clip = SourceSpec("file", str(runtime_clips / "av.mp4"))
    summary, events = run_collecting([clip], bundle=runtime_bundle, duration=2.0)
    assert [p["t"] for p in of_stream(events, "av", "prediction")] == [1.0, 1.5, 2.0]  # the last window ends at 2 s
    assert events[-1]["state"] == "ended" and "duration" in events[-1]["detail"]


def test_missing_file_is_a_user_error_before_anything_starts(runtime_bundle: Path, tmp_path: Path):
    from streamrec.core.errors import UserError

    with pytest.raises(UserError, match="no such media file"):
        Runtime([SourceSpec("file", str(tmp_path / "nothing.mp4"))], RuntimeOptions(bundle=runtime_bundle)).run()


def test_a_camera_and_an_audio_input_feed_one_stream_as_live_does(runtime_bundle: Path, runtime_clips: Path):
    """`streamrec live` fuses a camera and a microphone; here OpenCV reads a video file as the camera and
    the audio comes from a file, both in real time."""
    camera = SourceSpec("camera", str(runtime_clips / "pattern.mp4"), "live", realtime=True)
    microphone_like = SourceSpec("file", str(runtime_clips / "tone.wav"), "live", realtime=True)
    summary, events = run_collecting([camera, microphone_like], bundle=runtime_bundle)
    predictions = of_stream(events, "live", "prediction")
    assert [p["t"] for p in predictions] == [1.0, 1.5, 2.0, 2.5, 3.0]  # audio drives the updates
    assert all(p["modalities"]["audio"] and p["modalities"]["video"] for p in predictions[1:])  # fused with frames
    assert summary.streams["live"].state == "ended" and events[-1]["type"] == "status"


class ScriptedSource:
    """A source playing a script of (seconds to wait, item factory): a stand-in for a device that stalls."""

    description = "scripted"

    def __init__(self, script: list[tuple[float, object]]) -> None:
        self.script = script

    def prepare(self) -> None:
        pass

    def run(self, emit: Emit, stop: threading.Event) -> None:
        for delay, make in self.script:
            if stop.wait(delay):
                return
            emit(make())  # type: ignore[operator]


def tone_chunk(start: float) -> SourceItem:
    t = start + np.arange(8000) / 16000
    return AudioChunk((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, start, time.time())


def test_a_quiet_real_time_stream_is_reported_stalled_then_resumed(runtime_bundle: Path):
    script = [
        (0.0, lambda: SourceInfo(audio=True, video=False)),
        (0.0, lambda: StateChange("started", "scripted")),
        (0.0, lambda: tone_chunk(0.0)),
        (0.0, lambda: tone_chunk(0.5)),
        (1.2, lambda: tone_chunk(1.0)),  # nothing for 1.2 s
        (0.0, lambda: StateChange("ended", "script done")),
    ]
    source = CustomSource("dev", ScriptedSource(script), realtime=True)
    summary, events = run_collecting([source], bundle=runtime_bundle, stall_seconds=0.5)
    statuses = [(e["state"], e["detail"]) for e in events if e["type"] == "status"]
    assert statuses == [
        ("started", "scripted"),
        ("stalled", "no data for 0.5 s"),
        ("started", "data flows again"),
        ("ended", "script done"),
    ]
    assert [p["t"] for p in of_stream(events, "dev", "prediction")] == [1.0, 1.5]


def test_a_fast_source_never_overwrites_windows_due_but_not_yet_read(runtime_bundle: Path, monkeypatch):
    # A non-real-time source as fast as back-pressure lets it, and large batches: every window must be
    # evaluated. Once, a source overwrote the last windows of a batch between the windower advancing and
    # their being read; slow reads widen that gap so that the race shows every time if it is there.
    read_window = AudioRing.read_window

    def slow_read_window(self, *args, **kwargs):
        time.sleep(0.002)
        return read_window(self, *args, **kwargs)

    monkeypatch.setattr(AudioRing, "read_window", slow_read_window)
    chunk = 800  # 0.05 s at 16 kHz
    seconds = 60.0

    def chunks() -> list[tuple[float, object]]:
        items = [(0.0, lambda: SourceInfo(audio=True, video=False)), (0.0, lambda: StateChange("started", "fast"))]
        for i in range(int(seconds * 16000) // chunk):
            t = i * chunk / 16000
            samples = (0.2 * np.sin(2 * np.pi * 440 * (t + np.arange(chunk) / 16000))).astype(np.float32)
            items.append((0.0, lambda s=samples, t=t: AudioChunk(s, 16000, t, time.time())))
        return items + [(0.0, lambda: StateChange("ended", "done"))]

    for _ in range(2):
        source = CustomSource("fast", ScriptedSource(chunks()), realtime=False)
        summary, events = run_collecting([source], bundle=runtime_bundle, lag_seconds=0.05, max_batch=32)
        assert summary.streams["fast"].skipped == 0
        assert summary.streams["fast"].updates == int((seconds - 1.0) / 0.5) + 1


RUN_SCRIPT = """
import sys
from pathlib import Path
from streamrec.cli.run import run_streams
from streamrec.runtime.sources import SourceSpec
bundle, clip, jsonl, port = sys.argv[1:]
code = run_streams([SourceSpec("file", clip, realtime=True)], Path(bundle), ws=("127.0.0.1", int(port)),
                   jsonl=Path(jsonl), view=False)
print("exit code", code, flush=True)
sys.exit(code)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow  # `streamrec run` in a child process
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_within_two_seconds(runtime_bundle: Path, runtime_clips: Path, tmp_path: Path, signum):
    jsonl, port = tmp_path / "events.jsonl", _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, str(runtime_bundle), str(runtime_clips / "long.mp4"), str(jsonl), str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert _wait_for(lambda: jsonl.exists() and '"prediction"' in jsonl.read_text(), 60), "no prediction came"
        with connect(f"ws://127.0.0.1:{port}", open_timeout=10) as client:
            assert json.loads(client.recv(timeout=5))["type"] == "hello"
            sent = time.monotonic()
            process.send_signal(signum)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    client.recv(timeout=5)
            closed_after = time.monotonic() - sent
        process.wait(timeout=10)
        exited_after = time.monotonic() - sent
    finally:
        process.kill()
        output = process.communicate()[0]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, output
    assert process.returncode == 128 + signum, output
    assert closed_after < 2.0 and exited_after < 2.0, f"shutdown took {exited_after:.2f} s"
    last = json.loads(jsonl.read_text().splitlines()[-1])  # flushed to the end
    assert last == {"type": "status", "stream": "long", "state": "ended", "detail": "stopped"}


@pytest.mark.timeout(120, method="thread")  # the bug hung forever: fail instead
def test_a_video_only_bundle_runs_a_file_with_audio_to_its_end(runtime_bundle: Path, runtime_clips: Path, tmp_path):
    """Nothing reads the audio of a bundle without an audio network: a file decoded as fast as possible must
    not wait for inference to take it (it did, forever, once more than the audio ring holds: 6 s here)."""
    import shutil

    bundle = tmp_path / "video-only"
    shutil.copytree(runtime_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["networks"] = {"video": manifest["networks"]["video"]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    summary, events = run_collecting(
        [SourceSpec("file", str(runtime_clips / "long.mp4"), realtime=False)], bundle=bundle, backend="torch"
    )
    assert summary.streams and all(s.state == "ended" for s in summary.streams.values())
    predictions = [e for e in events if e["type"] == "prediction"]
    assert predictions and all(e["modalities"]["audio"] is None for e in predictions)


def test_networks_from_another_bundle_than_the_options_name_are_refused(
    runtime_bundle: Path, runtime_clips: Path
) -> None:
    """Preloaded networks take their fusion rule and smoothing from options.bundle (the bundled model when None):
    networks of another bundle would be run under another model's offsets and thresholds."""
    from streamrec.engines import load_networks

    networks = load_networks(runtime_bundle)
    source = [SourceSpec("file", str(runtime_clips / "av.mp4"), "a", False)]
    with pytest.raises(ValueError, match="classes differ"):
        Runtime(source, RuntimeOptions(), networks=networks).run()  # the bundled model has 13 classes, these 3
    summary = Runtime(source, RuntimeOptions(bundle=runtime_bundle), networks=networks).run()
    assert summary.streams["a"].updates > 0
