"""Sources on real media: what a file, a URL, a camera and a microphone deliver, and how they fail."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from streamrec.core.features import FrameConfig, preprocess_frame
from streamrec.core.media import MonoConverter, decode_audio, decode_frames
from streamrec.runtime.sources import (
    CaptureFormat,
    ReconnectPolicy,
    SourceError,
    SourceSpec,
    assign_stream_ids,
    live_sources,
    parse_source,
)
from streamrec.runtime.sources.camera import CameraSource
from streamrec.runtime.sources.file import AUDIO_PIECE_SECONDS, FileSource, _Decoder
from streamrec.runtime.sources.release import Interleaver, Pending
from streamrec.runtime.types import AudioChunk, Frame, SourceInfo, StateChange
from streamrec.runtime.windowing import WindowSpec

from .helpers import ffmpeg

pytestmark = pytest.mark.timeout(180)  # threads, sockets and child processes: never hang CI

FORMAT = CaptureFormat(16000, FrameConfig())


def collect(source, stop: threading.Event | None = None) -> list:
    items: list = []
    source.run(items.append, stop or threading.Event())
    return items


def split(items: list) -> tuple[list[AudioChunk], list[Frame], list]:
    audio = [i for i in items if isinstance(i, AudioChunk)]
    frames = [i for i in items if isinstance(i, Frame)]
    return audio, frames, [i for i in items if not isinstance(i, AudioChunk | Frame)]


def test_file_source_delivers_what_offline_decoding_gives(runtime_clips: Path) -> None:
    clip = runtime_clips / "av.mp4"
    before = time.time()
    items = collect(FileSource(clip, FORMAT))
    audio, frames, other = split(items)
    assert other[0] == SourceInfo(audio=True, video=True)
    assert other[1].state == "started" and other[-1] == StateChange("ended", "end of media")
    # the same samples and frames as media.decode_audio / decode_frames + preprocessing
    np.testing.assert_allclose(np.concatenate([c.samples for c in audio]), decode_audio(clip, 16000), atol=1e-5)
    images, times = decode_frames(clip)  # type: ignore[misc]
    assert [f.media_time for f in frames] == times.tolist() == [0.0, 1.0, 2.0]
    assert all(np.array_equal(f.image, preprocess_frame(x, FrameConfig())) for f, x in zip(frames, images))
    # contiguous media time, capture times stamped at the source, items in media-time order
    assert audio[0].media_time == 0.0
    assert all(b.media_time == pytest.approx(a.end_time) for a, b in zip(audio, audio[1:]))
    assert all(before <= c.capture_time <= time.time() for c in audio)
    # a file interleaves its streams in blocks; the source hands items on when their media time is due
    available = [
        i.end_time if isinstance(i, AudioChunk) else i.media_time for i in items if isinstance(i, AudioChunk | Frame)
    ]
    assert available == sorted(available)


@pytest.mark.parametrize(
    "codec",
    [
        ["-ac", "1", "-c:a", "aac"],
        ["-ac", "1", "-c:a", "pcm_f32le"],
        ["-ac", "2", "-c:a", "aac"],
        ["-ac", "2", "-c:a", "pcm_s16le"],
    ],
)
def test_mono_float_frames_are_taken_as_the_conversion_gives_them(tmp_path: Path, codec: list[str]) -> None:
    clip = tmp_path / "a.mkv"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=1.5:sample_rate=22050", "-af", "volume=0.5", *codec, str(clip)
    )

    def decoded(convert) -> np.ndarray:
        with av.open(str(clip)) as container:
            stream = container.streams.audio[0]
            return np.concatenate([x for frame in container.decode(stream) for x in convert(frame, stream.rate)])

    converters: dict[int, av.AudioResampler] = {}

    def by_pyav(frame: av.AudioFrame, rate: int) -> list[np.ndarray]:
        converter = converters.setdefault(rate, av.AudioResampler(format="flt", layout="mono", rate=rate))
        return [c.to_ndarray().reshape(-1) for c in converter.resample(frame)]

    ours: dict[int, MonoConverter] = {}
    expected, got = decoded(by_pyav), decoded(lambda f, rate: ours.setdefault(rate, MonoConverter(rate)).convert(f))
    tail = next(iter(ours.values())).flush()
    np.testing.assert_array_equal(np.concatenate([got, *tail]), expected)
    assert got.dtype == np.float32


def test_a_file_decoded_as_fast_as_possible_delivers_its_audio_in_pieces(runtime_clips: Path) -> None:
    clip = runtime_clips / "av.mp4"
    fast, _, _ = split(collect(FileSource(clip, FORMAT)))
    paced, _, _ = split(collect(FileSource(clip, FORMAT, realtime=True, duration=1.0)))
    seconds = [len(c.samples) / c.sample_rate for c in fast]
    # each piece AUDIO_PIECE_SECONDS of native audio or more, but the held rest and the resampler's tail at the end
    assert len(fast) < 3 / AUDIO_PIECE_SECONDS + 2 and min(seconds[:-2]) >= 0.95 * AUDIO_PIECE_SECONDS
    assert max(len(c.samples) for c in paced) / 16000 < 0.1  # real time: packet by packet, no added latency


def test_real_time_pacing_and_duration(runtime_clips: Path) -> None:
    started = time.monotonic()
    audio, _, other = split(collect(FileSource(runtime_clips / "av.mp4", FORMAT, realtime=True, duration=1.2)))
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.0  # paced: 1.2 s of media takes about 1.2 s
    assert audio[-1].media_time < 1.2 and other[-1].state == "ended" and "duration" in other[-1].detail
    # Decoded in bursts (DECODE_AHEAD) but each item released at its media time, none early: the capture
    # times follow the media clock (within scheduling jitter), as a live source's would.
    first = audio[0].capture_time - audio[0].end_time
    assert all(c.capture_time - c.end_time >= first - 0.02 for c in audio)
    assert max(c.capture_time - c.end_time for c in audio) - first < 0.15
    started = time.monotonic()
    collect(FileSource(runtime_clips / "av.mp4", FORMAT))
    assert time.monotonic() - started < 1.0  # fast: as quickly as it decodes


def test_a_paced_file_holds_its_audio_until_it_completes_a_window(runtime_clips: Path) -> None:
    windows = WindowSpec(16000, 8000)  # 1 s windows, one ending every 0.5 s
    clip, fmt = runtime_clips / "av.mp4", CaptureFormat(16000, FrameConfig(), windows, frame_phase=0.5)
    before = time.time()
    per_packet, frames_before, _ = split(collect(FileSource(clip, CaptureFormat(16000, frame_phase=0.5), True, 2.2)))
    started = time.time()
    held, frames, other = split(collect(FileSource(clip, fmt, realtime=True, duration=2.2)))
    # The same samples, now one chunk per window (1.0, 1.5, 2.0 s) and the rest at the duration's end
    np.testing.assert_array_equal(
        np.concatenate([c.samples for c in held]), np.concatenate([c.samples for c in per_packet])
    )
    assert len(per_packet) > 40 and len(held) == 4 and other[-1].state == "ended"
    ends = np.cumsum([len(c.samples) for c in held])
    assert all(
        end >= window_end and end - len(c.samples) < window_end
        for c, end, window_end in zip(held, ends, windows.ends(35200))
    )
    assert all(b.media_time == pytest.approx(a.end_time) for a, b in zip(held, held[1:]))
    # No added latency: the chunk that completes a window is released when its last packet is due, as
    # the packet was; the clock starts at the first (held) audio, not at the first frame (at 0.5 s).
    opening = per_packet[0].capture_time - before - per_packet[0].end_time  # seconds to open and decode
    for chunk in held:
        assert chunk.capture_time - started - chunk.end_time == pytest.approx(opening, abs=0.1)
    # Frames are not held: each is released at its own media time
    assert [f.media_time for f in frames] == [f.media_time for f in frames_before] == [0.52, 1.52]  # 25 fps
    assert all(f.capture_time - started - f.media_time == pytest.approx(opening, abs=0.1) for f in frames)


def test_frame_threads_only_for_a_fast_decode_of_a_large_video(runtime_clips: Path, tmp_path: Path) -> None:
    large = tmp_path / "large.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30:duration=1", "-c:v", "libx264", str(large))

    def threads(path: Path, realtime: bool) -> str:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            _Decoder(str(path), None, video, FORMAT, 0.0, realtime)
            return "one" if video.codec_context.thread_count == 1 else video.thread_type.name

    assert threads(runtime_clips / "av.mp4", realtime=False) == "one"  # 320x240 at 25 fps
    assert threads(large, realtime=False) == "AUTO"
    assert threads(large, realtime=True) == "one"


def test_stop_ends_a_paced_source_promptly(runtime_clips: Path) -> None:
    stop = threading.Event()
    items: list = []
    thread = threading.Thread(
        target=FileSource(runtime_clips / "long.mp4", FORMAT, realtime=True).run, args=(items.append, stop)
    )
    thread.start()
    time.sleep(0.5)
    stop.set()
    started = time.monotonic()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - started < 0.5
    assert not any(
        isinstance(i, StateChange) and i.state in ("ended", "error") for i in items
    )  # the runtime says "stopped"


def test_truncated_and_unreadable_files_end_in_error(runtime_clips: Path, tmp_path: Path) -> None:
    audio, _, other = split(collect(FileSource(runtime_clips / "truncated.mp4", FORMAT)))
    assert audio, "what decodes is delivered first"
    assert other[-1].state == "error" and "truncated" in other[-1].detail
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    assert collect(FileSource(garbage, FORMAT))[-1].state == "error"
    with pytest.raises(SourceError, match="no such media file"):
        FileSource(tmp_path / "missing.mp4", FORMAT).prepare()


def test_a_url_that_cannot_be_reached_reconnects_with_back_off_then_gives_up() -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = ReconnectPolicy(initial=0.1, factor=2.0, max_delay=0.2, give_up_after=0.6)
    started = time.monotonic()
    items = collect(FileSource(f"rtsp://127.0.0.1:{port}/none", FORMAT, realtime=True, reconnect=policy))
    states = [i.state for i in items if isinstance(i, StateChange)]
    assert states[0] == "reconnecting" and states.count("reconnecting") >= 3 and states[-1] == "error"
    assert "retrying in 0.1 s" in items[0].detail and "retrying in 0.2 s" in items[1].detail
    assert "gave up" in items[-1].detail and time.monotonic() - started < 5


def test_interleaver_releases_in_media_time_order_and_waits_boundedly() -> None:
    def item(kind: str, key: float) -> Pending:
        return Pending(key, kind, np.zeros(1, np.float32), key)

    merge = Interleaver(("audio", "video"), max_lead=1.0)
    for key in (0.1, 0.2, 0.3):
        merge.push(item("audio", key))
    assert merge.ready() == []  # video may still bring something earlier
    merge.push(item("video", 0.0))
    assert [i.key for i in merge.ready()] == [0.0]
    for key in (0.6, 1.2, 1.5):
        merge.push(item("audio", key))
    assert [i.key for i in merge.ready()] == [0.1, 0.2, 0.3]  # video silent for > 1 s: audio goes on
    assert [i.key for i in merge.flush()] == [0.6, 1.2, 1.5]


def test_camera_source_on_a_file(runtime_clips: Path) -> None:
    clip = runtime_clips / "av.mp4"
    camera = CameraSource(str(clip), FORMAT, fps=1.0, realtime=False)
    camera.prepare()
    audio, frames, other = split(collect(camera))
    assert not audio and other[0] == SourceInfo(audio=False, video=True) and other[-1].state == "ended"
    assert [round(f.media_time, 2) for f in frames] == [0.0, 1.0, 2.0]
    images, _ = decode_frames(clip)  # type: ignore[misc]
    for f, x in zip(frames, images):  # OpenCV's own FFmpeg build: the same pictures, within rounding
        assert np.abs(f.image.astype(int) - preprocess_frame(x, FrameConfig()).astype(int)).mean() < 3


def test_missing_camera_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="cannot open camera 57"):
        CameraSource(57, FORMAT).prepare()


def test_missing_microphone_is_a_clear_error() -> None:
    from streamrec.runtime.sources.microphone import MicrophoneSource

    try:
        import sounddevice  # noqa: F401
    except OSError:
        with pytest.raises(SourceError, match="PortAudio"):
            MicrophoneSource("nothing", FORMAT).prepare()
        return
    with pytest.raises(SourceError, match="no microphone 'no-such-microphone'|no microphone no-such-microphone"):
        MicrophoneSource("no-such-microphone", FORMAT).prepare()


def test_parse_source_and_stream_ids(runtime_clips: Path, tmp_path: Path) -> None:
    clip = str(runtime_clips / "av.mp4")
    assert parse_source(clip) == SourceSpec("file", clip)
    assert parse_source("rtsp://cam.local/stream").kind == "url" and parse_source("https://x/y.m3u8").is_realtime
    assert parse_source("camera:2") == SourceSpec("camera", "2") and parse_source("mic:") == SourceSpec(
        "microphone", ""
    )
    assert not parse_source(clip).is_realtime and parse_source(clip, realtime=True).is_realtime
    with pytest.raises(SourceError, match="no such media file"):
        parse_source(str(tmp_path / "nope.mp4"))
    specs = [
        SourceSpec("file", clip),
        SourceSpec("file", clip),
        SourceSpec("camera", "0"),
        SourceSpec("url", "rtsp://a/b"),
    ]
    assert assign_stream_ids(specs) == ["av", "av-2", "cam0", "url0"]
    live = live_sources(camera=0, microphone="")
    assert assign_stream_ids(live) == ["cam0", "cam0"]  # one stream fed by two inputs
    assert [s.kind for s in live] == ["camera", "microphone"] and all(s.is_realtime for s in live)
    assert assign_stream_ids(live_sources(camera=None, microphone="pulse")) == ["mic0"]
    with pytest.raises(ValueError, match="stream id"):
        SourceSpec("file", clip, "bad id!")


@pytest.mark.parametrize("phase", [0.0, 0.37])
def test_only_the_frames_needed_are_decoded_and_the_kept_ones_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: float
) -> None:
    import dataclasses

    from streamrec.core import media

    # 30 fps H.264 with B-frames (x264's veryfast: non-reference B-frames), as phones and encoders send it
    clip = tmp_path / "b_frames.mp4"
    ffmpeg(
        *["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=4"], *["-c:v", "libx264", "-bf", "3"], str(clip)
    )
    decoded = {"count": 0}
    real_decode = media.CorruptPackets.decode

    def counting(self, packet):
        frames = real_decode(self, packet)
        decoded["count"] += sum(1 for f in frames if isinstance(f, av.VideoFrame))
        return frames

    monkeypatch.setattr(media.CorruptPackets, "decode", counting)
    fmt = dataclasses.replace(FORMAT, frame_phase=phase)

    def run() -> tuple[tuple, int, list, int]:
        """decode_frames' frames, the video frames it decoded; FileSource's frames, the frames it decoded"""
        decoded["count"] = 0
        offline = decode_frames(clip)
        offline_count = decoded["count"]
        _, frames, _ = split(collect(FileSource(clip, fmt)))
        return offline, offline_count, frames, decoded["count"] - offline_count

    (images, times), offline_count, frames, runtime_count = run()
    with monkeypatch.context() as full:  # the same decoders decoding every frame
        full.setattr(media.DecodeOnlyNeeded, "before", lambda self, packet: None)
        (all_images, all_times), all_offline_count, all_frames, all_runtime_count = run()
    assert times.tolist() == all_times.tolist() and np.array_equal(images, all_images)
    assert [f.media_time for f in frames] == [f.media_time for f in all_frames]
    assert [f.media_time for f in frames] == pytest.approx([phase + n for n in range(4)], abs=0.034)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, all_frames))
    assert all_offline_count == all_runtime_count == 120
    assert offline_count < 0.8 * all_offline_count and runtime_count < 0.8 * all_runtime_count
