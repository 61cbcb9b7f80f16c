"""The live runtime with the trained model that ships in the package: the right class becomes active
and stays active, two streams carry their own classes, and silence and noise turn nothing on."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from streamrec.core.assets import DEFAULT_BUNDLE, EXAMPLE_CLIP
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import SourceSpec

from .helpers import ffmpeg

pytestmark = [
    pytest.mark.slow,  # the shipped model end to end on real media, in real time
    pytest.mark.timeout(300),
    pytest.mark.skipif(not (DEFAULT_BUNDLE / "manifest.json").exists(), reason="the bundled model is not installed"),
]

SEGMENTS = json.loads(EXAMPLE_CLIP.with_suffix(".json").read_text())["segments"]


@pytest.fixture(scope="module")
def segments(tmp_path_factory) -> dict[str, Path]:
    """Each instrument of the bundled example clip as its own file, and 6 s of silence and of pink noise."""
    out = tmp_path_factory.mktemp("segments")
    paths = {}
    for segment in SEGMENTS:
        path = out / f"{segment['class']}.mp4"
        ffmpeg(
            "-ss",
            str(segment["start"]),
            "-t",
            str(segment["end"] - segment["start"]),
            "-i",
            str(EXAMPLE_CLIP),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            str(path),
        )
        paths[segment["class"]] = path
    paths["silence"] = out / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", "6", str(paths["silence"]))
    paths["pink"] = out / "pink.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.1:r=22050:d=6", str(paths["pink"]))
    return paths


def run(specs: list[SourceSpec]) -> list[dict]:
    events: list[dict] = []
    Runtime(specs, RuntimeOptions(), sinks=[CallbackSink(events.append)]).run()
    return events


def active_sets(events: list[dict], stream: str) -> list[list[str]]:
    return [e["active"] for e in events if e["type"] == "prediction" and e["stream"] == stream]


def test_the_class_becomes_active_and_stays_without_flicker_over_a_real_websocket(segments) -> None:
    runtime = Runtime(
        [SourceSpec("file", str(segments["violin"]), "violin", realtime=True)],
        RuntimeOptions(ws=("127.0.0.1", 0), wait_clients=1),
    )
    thread = threading.Thread(target=runtime.run)
    thread.start()
    messages = []
    try:
        assert runtime.ready.wait(60), "the runtime did not start"
        with connect(f"ws://127.0.0.1:{runtime.ws_port}", open_timeout=10) as client:
            with pytest.raises(ConnectionClosed):
                while True:
                    messages.append(json.loads(client.recv(timeout=20)))
    finally:
        runtime.stop()
        thread.join(10)
    assert messages[0]["type"] == "hello" and messages[0]["classes"][-1] == "violin"
    active = active_sets(messages, "violin")
    assert len(active) >= 8
    first = next(i for i, a in enumerate(active) if a)
    assert first <= 2, active  # on within about 1.5 s of the start
    assert all(a == ["violin"] for a in active[first:]), active  # and it stays on, alone: no flicker


def test_two_streams_at_once_keep_their_own_classes(segments) -> None:
    events = run([SourceSpec("file", str(segments["piano"]), "a"), SourceSpec("file", str(segments["drums"]), "b")])
    for stream, name in (("a", "piano"), ("b", "drums")):
        active = [a for a in active_sets(events, stream) if a]
        assert active and all(a == [name] for a in active), (stream, active)
        labels = [e["labels"][0]["name"] for e in events if e["type"] == "prediction" and e["stream"] == stream]
        assert labels.count(name) >= 0.8 * len(labels)


@pytest.mark.parametrize("name", ["silence", "pink"])
def test_silence_and_pink_noise_turn_nothing_on(segments, name: str) -> None:
    active = active_sets(run([SourceSpec("file", str(segments[name]), name)]), name)
    assert len(active) >= 8 and not any(active), active


def test_demo_fast_prints_recognised_labels() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "demo", "--fast", "--duration", "5", "--no-view", "--jsonl", "/dev/stdout"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    predictions = [json.loads(line) for line in done.stdout.splitlines() if '"prediction"' in line]
    assert predictions and any("violin" in p["active"] for p in predictions)  # the clip opens with a violin
    assert time.time() - predictions[-1]["wall"] < 120


def test_smoothing_what_the_networks_said_gives_the_runtimes_own_active_sets() -> None:
    """`streamrec tune` runs the networks once per clip and smooths what they said under each setting: that must
    be what the runtime shows under that setting."""
    from streamrec.core.bundle import Bundle
    from streamrec.engines import load_networks
    from streamrec.runtime.replay import recognitions, replay
    from streamrec.runtime.smoothing import Smoother, SmoothingOptions

    networks = load_networks(DEFAULT_BUNDLE, "torch")
    said = recognitions(EXAMPLE_CLIP, RuntimeOptions(), networks)
    for options in (SmoothingOptions(), SmoothingOptions(on_threshold=0.6, audio_on_updates=3, audio_on_video=0.1)):
        shown = [(e["t"], e["active"]) for e in replay(EXAMPLE_CLIP, RuntimeOptions(smoothing=options), networks)]
        smoother = Smoother(Bundle.load(DEFAULT_BUNDLE).classes, options)
        smoothed = [(t, list(smoother.follow(t, recognition).active)) for t, recognition in said]
        assert [t for t, _ in smoothed] == pytest.approx([t for t, _ in shown])
        assert [a for _, a in smoothed] == [a for _, a in shown]
        assert any(a for _, a in shown)  # the example's instruments turn on: the comparison is not of empty sets
