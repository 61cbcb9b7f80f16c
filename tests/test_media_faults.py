"""Media and stream faults (issue #20, items 9-13): valid files whose streams differ in length or start
late, timestamp resets, corrupt packets, malformed and unusable URLs, an RTSP outage. Every file is
made here with ffmpeg; every server listens on loopback."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest

from streamrec.core.features import FrameConfig
from streamrec.core.media import Timeline, decode_audio, decode_frames
from streamrec.runtime.options import CustomSource
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.smoothing import SmoothingOptions
from streamrec.runtime.sources import CaptureFormat, ReconnectPolicy, SourceError, SourceSpec
from streamrec.runtime.sources.file import FileSource
from streamrec.runtime.types import AudioChunk, Frame, SourceInfo, StateChange

from .helpers import AAC, H264, ffmpeg, free_port
from .test_runtime_devices import _rtsp_server_missing, _start_rtsp_server

pytestmark = pytest.mark.timeout(120)  # threads, sockets and child processes: never hang CI

FORMAT = CaptureFormat(16000, FrameConfig())
RATE = 16000  # Hz, the test bundle's audio rate


def video_in(seconds: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}"]


def tone_in(seconds: float, frequency: float = 440) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=44100:duration={seconds}"]


def play(target: str | Path, **options) -> tuple[list[AudioChunk], list[Frame], list[StateChange]]:
    """Everything a FileSource delivers, split into audio, frames and state changes."""
    items: list = []
    FileSource(target, FORMAT, **options).run(items.append, threading.Event())
    audio = [i for i in items if isinstance(i, AudioChunk)]
    frames = [i for i in items if isinstance(i, Frame)]
    return audio, frames, [i for i in items if isinstance(i, StateChange)]


def predictions(bundle: Path, source: SourceSpec | CustomSource, **options) -> list[dict]:
    events: list[dict] = []
    Runtime([source], RuntimeOptions(bundle=bundle, **options), sinks=[CallbackSink(events.append)]).run()
    return [e for e in events if e["type"] == "prediction"]


# --- 9. Matroska / WebM: no stream declares its own length ----------------------------------------


@pytest.mark.parametrize(
    "name, args",
    [
        ("short_audio.mkv", [*video_in(5), *tone_in(2.5), *H264, *AAC]),
        (
            "short_audio.webm",
            [*video_in(5), *tone_in(2.5), "-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus"],
        ),
        ("late_start.mkv", [*video_in(4), *tone_in(4), *H264, *AAC, "-output_ts_offset", "10"]),
        ("late_audio.mkv", [*video_in(5), "-itsoffset", "2", *tone_in(3), *H264, *AAC]),
    ],
)
def test_valid_matroska_and_webm_play_to_their_end(tmp_path: Path, name: str, args: list[str]) -> None:
    path = tmp_path / name
    ffmpeg(*args, str(path))
    audio, frames, states = play(path)
    assert states[-1] == StateChange("ended", "end of media"), states[-1]
    assert audio and frames[-1].media_time >= 3.0
    assert decode_audio(path, RATE) is not None and decode_frames(path) is not None  # training reads it too


def test_a_truncated_matroska_file_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.mkv"
    ffmpeg(*video_in(5), *tone_in(2.5), *H264, *AAC, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 5])
    audio, _, states = play(path)
    assert audio and states[-1].state == "error" and "truncated" in states[-1].detail


def test_run_exits_0_on_a_matroska_file_with_short_audio(tmp_path: Path, runtime_bundle: Path, streamrec_cli) -> None:
    path = tmp_path / "short_audio.mkv"
    ffmpeg(*video_in(4), *tone_in(2), *H264, *AAC, str(path))
    assert streamrec_cli("run", str(path), "--model", str(runtime_bundle), "--backend", "torch", "--no-view") == 0


# --- 10. one time axis for every stream of a file ---------------------------------------------------


def test_a_late_video_keeps_its_place_beside_the_audio(tmp_path: Path, runtime_bundle: Path) -> None:
    path = tmp_path / "late_video.mp4"  # 6 s of tone; the video shows from 4 s to 6 s
    streams = ["-map", "0:a", "-map", "1:v", "-fps_mode", "passthrough"]  # no made-up frames before 4 s
    ffmpeg(*tone_in(6), "-itsoffset", "4", *video_in(2), *streams, *H264, *AAC, str(path))
    audio, frames, states = play(path)
    assert states[-1].state == "ended" and audio[0].media_time == 0.0
    assert [round(f.media_time, 1) for f in frames] == [4.0, 5.0]
    assert decode_frames(path)[1].round(1).tolist() == [4.0, 5.0]  # type: ignore[index]  # offline alike
    updates = predictions(runtime_bundle, SourceSpec("file", str(path)))
    assert all(p["modalities"]["video"] is None for p in updates if p["t"] < 4.0)  # no picture yet
    assert all(p["modalities"]["video"] is not None for p in updates if p["t"] >= 4.5)


def test_a_late_audio_keeps_its_place_beside_the_video(tmp_path: Path) -> None:
    path = tmp_path / "late_audio.mkv"
    ffmpeg(*video_in(5), "-itsoffset", "2", *tone_in(3), *H264, *AAC, str(path))
    audio, frames, _ = play(path)
    assert frames[0].media_time == 0.0 and audio[0].media_time == pytest.approx(2.0, abs=0.05)
    assert audio[-1].end_time == pytest.approx(5.0, abs=0.1)


def test_the_timeline_keeps_offsets_and_reordering_and_bridges_resets() -> None:
    timeline = Timeline([])  # no stream declares a start: the first timestamp is zero
    assert timeline.time("audio", 100.0) == 0.0
    assert timeline.time("video", 106.0) == pytest.approx(6.0)  # a later start keeps its offset
    assert timeline.time("video", 105.9) == pytest.approx(5.9)  # packets of B-frames out of order
    assert timeline.time("video", 1.4, step=0.04) == pytest.approx(6.04)  # a reset: one step on
    assert timeline.time("video", 1.44, step=0.04) == pytest.approx(6.08)
    assert timeline.time("audio", 130.0, step=0.02) == pytest.approx(0.02)  # a leap of 30 s


def test_a_timestamp_reset_mid_file_keeps_the_video(tmp_path: Path) -> None:
    parts = []
    for n, frequency in enumerate((440, 660)):
        parts.append(tmp_path / f"part{n}.ts")
        ffmpeg(*video_in(4), *tone_in(4, frequency), *H264, *AAC, "-shortest", str(parts[-1]))
    joined = tmp_path / "joined.ts"  # concatenated MPEG-TS: the timestamps start over at 4 s
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    audio, frames, states = play(joined)
    times = [f.media_time for f in frames]
    assert states[-1].state == "ended" and len(frames) == 8 and times == sorted(times)
    assert times[-1] == pytest.approx(7.0, abs=0.1) and audio[-1].end_time == pytest.approx(8.0, abs=0.1)


# --- 11. a corrupt packet is skipped --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_corrupt_packets_are_skipped_counted_and_warned_about_once(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "damaged.mp4"
    ffmpeg(*video_in(6), *tone_in(6), *H264, *AAC, "-shortest", "-movflags", "+faststart", str(path))
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux() if p.size and p.stream.type == kind]
    data = bytearray(path.read_bytes())
    for pos, size in (packets[len(packets) * 2 // 5], packets[len(packets) * 3 // 5]):
        data[pos : pos + size] = b"\xff" * size  # two damaged packets, as a bad sector or a network error leaves
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        audio, frames, states = play(path)
    assert states[-1] == StateChange("ended", "end of media (2 corrupt packets skipped)")
    assert frames[-1].media_time == pytest.approx(5.0) and audio[-1].end_time == pytest.approx(6.0, abs=0.1)
    assert len([r for r in caplog.records if "corrupt" in r.getMessage()]) == 1


# --- 12. URLs that cannot work end at once; transient errors are retried -----------------------------


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/busy":
            self.send_error(503)  # a server that may come back
        else:
            super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder): a loopback HTTP server for the duration of a test."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


FAST_RETRY = ReconnectPolicy(initial=0.1, factor=2.0, max_delay=0.2, give_up_after=1.0)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("rtsp://", "names no host"),
        ("rtsp:///stream", "names no host"),
        ("RTMP://:1935/live", "names no host"),
        ("rtsp://127.0.0.1:99999/stream", "out of range"),
        ("http://[::1/clip.mp4", "malformed URL"),
    ],
)
def test_malformed_urls_are_refused_before_anything_starts(url: str, reason: str) -> None:
    with pytest.raises(SourceError, match=reason):
        FileSource(url, FORMAT).prepare()


def test_http_404_ends_at_once_and_503_is_retried(http_server: tuple[str, Path]) -> None:
    host, _ = http_server
    started = time.monotonic()
    _, _, states = play(f"http://{host}/missing.mp4", realtime=True, reconnect=FAST_RETRY)
    assert [s.state for s in states] == ["error"] and "404" in states[0].detail
    assert time.monotonic() - started < 2.0  # not the retries up to give_up_after
    _, _, states = play(f"http://{host}/busy", realtime=True, reconnect=FAST_RETRY)
    assert [s.state for s in states].count("reconnecting") >= 3 and "gave up" in states[-1].detail


def test_an_upper_case_scheme_is_a_url_like_any_other(http_server: tuple[str, Path], runtime_clips: Path) -> None:
    host, folder = http_server
    (folder / "clip.mp4").write_bytes((runtime_clips / "av.mp4").read_bytes())
    audio, frames, states = play(f"HTTP://{host}/clip.mp4", reconnect=FAST_RETRY)
    assert states[-1] == StateChange("ended", "end of media") and audio and frames


def test_a_protocol_ffmpeg_lacks_ends_at_once() -> None:
    try:
        av.open("srt://127.0.0.1:9/x", timeout=1).close()
        pytest.skip("this FFmpeg build has SRT")
    except av.error.ProtocolNotFoundError:
        pass
    except av.error.FFmpegError:
        pytest.skip("this FFmpeg build has SRT")
    _, _, states = play("srt://127.0.0.1:9/x", realtime=True, reconnect=FAST_RETRY)
    assert [s.state for s in states] == ["error"] and "Protocol not found" in states[0].detail


def test_run_says_one_line_and_exits_2_for_urls_that_cannot_work(
    http_server: tuple[str, Path],
    runtime_bundle: Path,
    streamrec_cli,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    host, _ = http_server
    for url in ("rtsp://", "rtsp://127.0.0.1:99999/stream", f"http://{host}/missing.mp4"):
        caplog.clear()
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            code = streamrec_cli("run", url, "--model", str(runtime_bundle), "--backend", "torch", "--no-view")
        assert code == 2 and time.monotonic() - started < 20  # no minute of retries
        err = capsys.readouterr().err.strip()
        if "missing" in url:  # refused by the server: the stream ends in error, its one line in the log
            lines = [r.getMessage() for r in caplog.records if "404" in r.getMessage()]
            assert len(lines) == 1 and "url0: error cannot open" in lines[0] and not err, (lines, err)
        else:  # refused before anything starts
            assert len(err.splitlines()) == 1 and "malformed URL" in err, err


# --- 13. around an outage -------------------------------------------------------------------------


class _OutageSource:
    """A live input that delivers `before`, loses its connection once the runtime evaluated it (as a real
    outage lasts seconds), then reconnects and delivers `after`, its clock 10 s later."""

    description = "outage"

    def __init__(self, before: np.ndarray, after: np.ndarray, evaluated: threading.Event) -> None:
        self.before, self.after, self.evaluated = before, after, evaluated

    def prepare(self) -> None:
        pass

    def run(self, emit, stop: threading.Event) -> None:
        emit(SourceInfo(audio=True, video=False))
        emit(StateChange("started", "audio"))
        if len(self.before):
            emit(AudioChunk(self.before, RATE, 0.0, time.time()))
            assert self.evaluated.wait(30), "the runtime evaluated nothing"
            emit(StateChange("reconnecting", "connection lost; retrying in 0.5 s"))
            emit(SourceInfo(audio=True, video=False))
            emit(StateChange("started", "reconnected: audio"))
        emit(AudioChunk(self.after, RATE, 10.0 if len(self.before) else 0.0, time.time()))
        emit(StateChange("ended", "end of media"))


def test_after_a_reconnection_windows_and_smoothing_start_over(runtime_bundle: Path) -> None:
    t = np.arange(round(1.25 * RATE)) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # 1.25 s: one window, and a quarter of one
    silence = np.zeros(2 * RATE, np.float32)
    # Classes turn on easily (from the tone's one window) and stay on for long: what the smoother holds would show
    # after the outage.
    options = {
        "smoothing": SmoothingOptions(
            on_threshold=0.05, off_threshold=0.01, min_hold=100.0, on_updates=1, background_max=1.0, audio_on=None
        )
    }
    evaluated = threading.Event()

    def source(before: np.ndarray) -> CustomSource:
        return CustomSource("s", _OutageSource(before, silence, evaluated), realtime=False)

    events: list[dict] = []
    sink = CallbackSink(lambda e: (events.append(e), e["type"] == "prediction" and evaluated.set()))
    Runtime([source(tone)], RuntimeOptions(bundle=runtime_bundle, **options), sinks=[sink]).run()
    outage = [e for e in events if e["type"] == "prediction"]
    fresh = predictions(runtime_bundle, source(np.zeros(0, np.float32)), **options)  # the same silence, new stream
    assert [p["t"] for p in outage] == [1.0] + [10.0 + p["t"] for p in fresh]
    assert outage[0]["active"], "the tone should turn classes on before the outage"
    for after, alone in zip(outage[1:], fresh):
        # the first window holds only audio from after the outage, and nothing stays on from before it
        assert after["modalities"]["audio"] == alone["modalities"]["audio"] and after["active"] == alone["active"] == []


@pytest.mark.slow
def test_an_rtsp_outage_is_reported_in_order_and_keeps_the_clock(runtime_bundle: Path) -> None:
    reason = _rtsp_server_missing()
    if reason:
        pytest.skip(reason)
    port = free_port()
    server = _start_rtsp_server(port)
    events: list[dict] = []
    runtime = Runtime(
        [SourceSpec("url", f"rtsp://127.0.0.1:{port}/test", "cam")],
        RuntimeOptions(bundle=runtime_bundle, stall_seconds=1.0),
        sinks=[CallbackSink(events.append)],
    )
    thread = threading.Thread(target=runtime.run)
    thread.start()

    def count(kind: str, state: str | None = None) -> int:
        return sum(1 for e in list(events) if e["type"] == kind and (state is None or e["state"] == state))

    def wait_for(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            time.sleep(0.05)
        return predicate()

    try:
        assert wait_for(lambda: count("prediction") >= 3, 30), events[-3:]
        server.send_signal(signal.SIGSTOP)  # the camera freezes: no data, no closed connection
        assert wait_for(lambda: count("status", "reconnecting") >= 1, 15), events[-3:]
        time.sleep(1.0)
        server.send_signal(signal.SIGCONT)
        assert wait_for(lambda: count("status", "started") >= 2, 20), [e for e in events if e["type"] == "status"]
        reconnected = len(events)
        assert wait_for(lambda: any(e["type"] == "prediction" for e in events[reconnected:]), 15)
    finally:
        runtime.stop()
        thread.join(10)
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait(5)
    statuses = [(i, e["state"], e["detail"]) for i, e in enumerate(events) if e["type"] == "status"]
    stalled = next(i for i, state, _ in statuses if state == "stalled")
    lost = next(i for i, state, _ in statuses if state == "reconnecting")
    # stalled, then reconnecting: nothing claims that data flows again in between
    assert stalled < lost and not any(state == "started" for i, state, _ in statuses if stalled < i < lost), statuses
    back = next(i for i, state, detail in statuses if state == "started" and detail.startswith("reconnected"))
    last = [e for e in events[:lost] if e["type"] == "prediction"][-1]
    first = next(e for e in events[back:] if e["type"] == "prediction")
    # the media clock went on through the outage: as much media time as wall time passed
    assert first["t"] - last["t"] == pytest.approx(first["wall"] - last["wall"], abs=1.0)
