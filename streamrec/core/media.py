"""Decoding media files and streams with PyAV (FFmpeg): audio as mono float32, frames at a fixed rate.

Used by the dataset reader (train/) and by the file/URL sources of the live runtime, so that a clip
is decoded the same way in training and at run time.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio.functional as AF

log = logging.getLogger(__name__)

# A file whose streams decode to less than this share of their declared duration is truncated.
MIN_DECODED_SHARE = 0.9
# A stream's timestamps may step back this many seconds (packets of B-frames are out of order)
# and leap ahead this many (FFmpeg's -dts_delta_threshold) before the step counts as a reset.
TIMESTAMP_BACKSTEP = 1.0
TIMESTAMP_LEAP = 10.0


class MediaError(Exception):
    """A media file that cannot be opened or decoded; the message says why in one sentence."""


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds: its streams and their declared durations in seconds (None when unknown)."""

    has_audio: bool
    has_video: bool
    audio_duration: float | None
    video_duration: float | None
    audio_rate: int | None
    video_fps: float | None


class FrameSampler:
    """Keeps one frame per tick of 1/fps seconds: the first frame at or after each tick.

    Pure logic shared by file decoding and live capture: feed it the timestamp of every decoded
    frame in rising order and it says whether to keep that frame. Ticks fall at phase + n/fps: the
    live runtime gives concurrent real-time streams different phases, so that their frames reach the
    frame network spread over the second instead of all in the same instant (0 everywhere else).
    """

    def __init__(self, fps: float = 1.0, phase: float = 0.0) -> None:
        if fps <= 0:
            raise ValueError(f"frame rate must be positive, got {fps}")
        self.interval = 1.0 / fps
        if not 0.0 <= phase < self.interval:
            raise ValueError(f"the sampling phase must lie in [0, {self.interval:g}) seconds, got {phase}")
        self.phase = phase
        self.reset()

    def reset(self) -> None:
        self._next_tick = self.phase

    @property
    def next_tick(self) -> float:
        """Seconds of the tick the next kept frame answers: no frame stamped before it is kept."""
        return self._next_tick

    def take(self, t: float) -> bool:
        # A tolerance of 1 ms keeps a frame stamped 0.9999 s for the tick at 1 s.
        if t + 1e-3 < self._next_tick:
            return False
        # Skip ticks that passed while no frame arrived (a gap in the stream): one frame per call.
        ticks_passed = int((t + 1e-3 - self._next_tick) // self.interval) + 1
        self._next_tick += ticks_passed * self.interval
        return True


class DecodeOnlyNeeded:
    """Decodes only the video frames a FrameSampler can keep, or that frames it keeps are built from.

    A frame that no other frame references (FFmpeg's AVDISCARD_NONREF: the non-reference B-frames of
    H.264 and HEVC) and that falls well before the sampler's next tick would be decoded only to be
    dropped, so its packet is not decoded. Reference frames are always decoded, and near a tick every
    frame is, so the kept frames are exactly those of a full decode. 1 fps from 720p30 H.264 with B-frames
    took 0.78x the CPU of a full decode (measured); a stream without B-frames gains nothing. Call before()
    with every packet of the video stream before decoding it and kept() with every frame the sampler keeps.
    """

    def __init__(self, stream: av.video.stream.VideoStream, sampler: FrameSampler) -> None:
        self.stream, self.sampler = stream, sampler
        frame_step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.1
        # Decoded in full from this long before the next tick: frame durations jitter, and packets leave the
        # decoder's queue in presentation order a few frames late, so the last kept frame is a little stale.
        self.margin = 0.1 + 2 * frame_step
        self._kept: tuple[float, float] | None = None  # (timestamp, axis seconds) of the newest kept frame
        self._skipping = False

    def before(self, packet: av.packet.Packet) -> None:
        skip = False
        if self._kept is not None and packet.pts is not None and packet.time_base is not None:
            # Between two bridged discontinuities timestamp and axis differ by a constant, so the distance to
            # the next tick is measured from the last kept frame in timestamp seconds.
            ahead = seconds(packet.pts, packet.time_base) - self._kept[0]
            skip = ahead < self.sampler.next_tick - self._kept[1] - self.margin
        if skip != self._skipping:
            self.stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            self._skipping = skip

    def kept(self, timestamp: float, t: float) -> None:
        """timestamp: the kept frame's own seconds (pts * time_base); t: its seconds on the Timeline."""
        self._kept = (timestamp, t)


def open_container(target: str, **options) -> av.container.InputContainer:
    """av.open for reading, as every decoder here opens media: a tag in another encoding than UTF-8 (Latin-1 in
    some of KTuberling's recordings) must not stop decoding. options: av.open's (options, timeout)."""
    return av.open(target, mode="r", metadata_errors="replace", **options)


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        return open_container(str(path))
    except FileNotFoundError as e:
        raise MediaError(f"file not found: {path}") from e
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"cannot open {path}: {e}") from e


def _stream_duration(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe(path: str | Path) -> MediaInfo:
    """Reads the container header only: which streams exist and how long they claim to be."""
    with _open(path) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        video = container.streams.video[0] if container.streams.video else None
        return MediaInfo(
            has_audio=audio is not None,
            has_video=video is not None,
            audio_duration=_stream_duration(audio, container) if audio else None,
            video_duration=_stream_duration(video, container) if video else None,
            audio_rate=audio.rate if audio else None,
            video_fps=float(video.average_rate) if video and video.average_rate else None,
        )


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc) of a mono float32 signal."""
    if from_rate == to_rate or len(audio) == 0:  # torchaudio cannot reshape an empty signal (a stream of no sample)
        return audio.astype(np.float32, copy=False)
    resampled = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), from_rate, to_rate)
    return resampled.numpy()


def seconds(ticks: int, time_base: Fraction) -> float:
    """ticks * time_base as a float, rounded as float(ticks * time_base) rounds it (Python's int / int is
    correctly rounded) but without building Fractions: this runs for every packet and frame."""
    return ticks * time_base.numerator / time_base.denominator


def _check_complete(path: str | Path, kind: str, decoded: float, declared: float | None) -> None:
    if declared and declared > 0.5 and decoded < MIN_DECODED_SHARE * declared:
        raise MediaError(f"truncated {kind}: decoded {decoded:.1f} s of the {declared:.1f} s declared in {path}")


class Timeline:
    """The one time axis of a file (or of one connection to a URL): seconds since the earliest
    declared start of its streams, each stream keeping its offset (a video that starts 6 s after its
    audio starts at 6 s), and continuous.

    A stream's timestamps that step back by more than TIMESTAMP_BACKSTEP or leap ahead by more than
    TIMESTAMP_LEAP (concatenated MPEG-TS files, an encoder restarting, a wrap) are bridged: the stream
    goes on one step after where it was, instead of going back in time (its frames were dropped until
    the old time came back) or leaping ahead.
    """

    def __init__(self, streams: Sequence[av.stream.Stream]) -> None:
        starts = [float(s.start_time * s.time_base) for s in streams if s.start_time is not None and s.time_base]
        self.origin: float | None = min(starts) if starts else None  # None until the first timestamp
        self._shift: dict[Hashable, float] = {}
        self._last: dict[Hashable, float] = {}

    def time(self, key: Hashable, raw: float, step: float = 0.0) -> float:
        """Seconds on the axis of the timestamp `raw` (seconds) of stream `key`; step: seconds the
        stream is expected to advance from its previous timestamp (a frame's duration)."""
        if self.origin is None:  # no stream declared a start: the first timestamp seen is zero
            self.origin = raw
        t = raw + self._shift.setdefault(key, -self.origin)
        last = self._last.get(key)
        if last is not None and not last - TIMESTAMP_BACKSTEP <= t <= last + TIMESTAMP_LEAP:
            self._shift[key] += last + step - t
            t = last + step
        self._last[key] = t if last is None else max(last, t)
        return t


class Extent:
    """How far a file's streams reach, from the timestamps of their packets: tells a truncated file
    (every stream stops early) from a valid one whose streams differ in length or start late."""

    def __init__(self, streams: Sequence[av.stream.Stream]) -> None:
        self.streams = list(streams)
        self._timeline = Timeline(self.streams)
        self._first: dict[int, float] = {}
        self._end: dict[int, float] = {}
        # A demuxed packet is stamped in its stream's time base; PyAV builds a new Fraction on every read
        # of packet.time_base, which was a tenth of a source's CPU.
        self._time_bases = {s.index: s.time_base for s in self.streams if s.time_base}

    def add(self, packet: av.packet.Packet) -> None:
        raw = packet.pts if packet.pts is not None else packet.dts
        if raw is None:  # the flush packets at the end carry no time
            return
        index = packet.stream.index
        time_base = self._time_bases.get(index) or packet.time_base
        if time_base is None:
            return
        duration = seconds(packet.duration, time_base) if packet.duration else 0.0
        t = self._timeline.time(index, seconds(raw, time_base), duration)
        self._first.setdefault(index, t)
        self._end[index] = max(self._end.get(index, t), t + duration)

    def check(self, path: str | Path, container: av.container.InputContainer) -> None:
        """Raises MediaError when the file ends well before the durations it declares."""
        for stream in self.streams:
            declared = _declared_length(stream, container)
            if declared is not None:
                covered = self._end.get(stream.index, 0.0) - self._first.get(stream.index, 0.0)
                _check_complete(path, stream.type, covered, declared)
        if container.duration is None:
            return
        # Matroska and WebM declare only the file's duration: the length of its longest stream, which
        # FFmpeg counts from the first timestamp for some formats (MPEG-TS) and from zero for others
        # (Matroska, whose timestamps may start late): reaching it either way will do.
        declared = container.duration / av.time_base
        reached = max(self._end.values(), default=0.0)
        from_zero = reached + (self._timeline.origin or 0.0)
        if declared > 0.5 and max(reached, from_zero) < MIN_DECODED_SHARE * declared:
            raise MediaError(
                f"truncated file: its streams end after {reached:.1f} s of the {declared:.1f} s declared in {path}"
            )


def _declared_length(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    """Seconds a stream declares itself (MP4, MPEG-TS), or None. Matroska and WebM declare no stream's
    length: FFmpeg then fills in the file's start and duration, which say nothing about the stream."""
    if stream.duration is None or stream.time_base is None:
        return None
    length = float(stream.duration * stream.time_base)
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
    filled = (
        container.duration is not None
        and container.start_time is not None
        and start is not None
        and abs(length - container.duration / av.time_base) < 2e-3
        and abs(start - container.start_time / av.time_base) < 2e-3
    )
    return None if filled else length


class CorruptPackets:
    """Decodes packets, skipping those that fail to decode (a damaged packet: FFmpeg's own tools go on
    the same way), counted, with one warning per input."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def decode(self, packet: av.packet.Packet) -> list[av.frame.Frame]:
        try:
            return packet.decode()
        except av.error.FFmpegError as e:
            self.count += 1
            if self.count == 1:
                log.warning(
                    "%s: skipped a corrupt %s packet (%s); further ones are counted", self.name, packet.stream.type, e
                )
            return []


class MonoConverter:
    """Decoded audio frames -> mono float32 samples at the stream's own rate: PyAV converts the sample
    format and downmixes. Frames that are mono float at that rate already (most AAC and Opus streams)
    are taken as they are, which is what the conversion returns for them, without its filter-graph call
    per frame: that call held the interpreter lock for a fifth of a file source's time."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._converter = av.AudioResampler(format="flt", layout="mono", rate=rate)
        self._converting = False  # once converting, always: the converter may hold samples back

    def convert(self, frame: av.AudioFrame) -> list[np.ndarray]:
        as_is = (
            frame.format.name in ("flt", "fltp") and frame.layout.nb_channels == 1 and frame.sample_rate == self.rate
        )
        if as_is and not self._converting:
            return [frame.to_ndarray().reshape(-1)]
        self._converting = True
        return [converted.to_ndarray().reshape(-1) for converted in self._converter.resample(frame)]

    def flush(self) -> list[np.ndarray]:
        """What the converter still holds at the end of the stream."""
        if not self._converting:
            return []
        return [converted.to_ndarray().reshape(-1) for converted in self._converter.resample(None)]


def _demuxed(container: av.container.InputContainer) -> list[av.stream.Stream]:
    """The streams read: the first audio and the first video stream."""
    return [*container.streams.audio[:1], *container.streams.video[:1]]


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray | None:
    """Decodes the first audio stream to mono float32 in [-1, 1] at `sample_rate` Hz.

    Returns None when the file has no audio stream. Raises MediaError for unreadable or
    truncated files; packets that fail to decode are skipped.
    """
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        # The video's packets are read too (not decoded): they tell how long the file is (Extent).
        extent, corrupt = Extent(_demuxed(container)), CorruptPackets(str(path))
        # PyAV converts sample format and downmixes; the rate change is left to torchaudio.
        converter = MonoConverter(stream.rate)
        pieces: list[np.ndarray] = []
        try:
            for packet in container.demux(extent.streams):
                extent.add(packet)
                for frame in corrupt.decode(packet) if packet.stream.index == stream.index else ():
                    pieces += converter.convert(frame)
            pieces += converter.flush()
        except av.error.FFmpegError as e:
            raise MediaError(f"corrupt audio in {path}: {e}") from e
        if corrupt.count and not pieces:
            raise MediaError(f"corrupt audio in {path}: none of its packets decode")
        extent.check(path, container)
        native = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return resample(native, stream.rate, sample_rate)


def decode_frames(path: str | Path, fps: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """Decodes the first video stream, keeping one RGB frame per 1/fps seconds.

    Returns (frames, times): frames (n, height, width, 3) uint8 RGB, times (n,) seconds of media
    time. Returns None when the file has no video stream. Raises MediaError for unreadable or
    truncated files.
    """
    with _open(path) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        streams = _demuxed(container)
        extent, corrupt, timeline = Extent(streams), CorruptPackets(str(path)), Timeline(streams)
        interval = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0  # seconds per frame
        sampler = FrameSampler(fps)
        only_needed = DecodeOnlyNeeded(stream, sampler)
        frames: list[np.ndarray] = []
        times: list[float] = []
        try:
            for packet in container.demux(streams):
                extent.add(packet)
                if packet.stream.index != stream.index:
                    continue
                only_needed.before(packet)
                for frame in corrupt.decode(packet):
                    if frame.pts is None:
                        continue
                    timestamp = seconds(frame.pts, stream.time_base)
                    t = timeline.time("video", timestamp, interval)
                    if sampler.take(t):
                        only_needed.kept(timestamp, t)
                        frames.append(frame.to_ndarray(format="rgb24"))
                        times.append(t)
        except av.error.FFmpegError as e:
            raise MediaError(f"corrupt video in {path}: {e}") from e
        extent.check(path, container)
        if not frames:
            raise MediaError(f"no decodable video frames in {path}")
        return np.stack(frames), np.asarray(times, dtype=np.float64)


@dataclass(frozen=True)
class _ResampleTaps:
    """torchaudio's sinc kernel for one pair of rates, as its non-zero band: output phase j of a block
    reads the input samples index[j] (from the block's first input sample) with weights taps[j]."""

    index: np.ndarray  # (out_step, band) int
    taps: np.ndarray  # (out_step, band) float32
    width: int  # torchaudio's filter half-width, input samples


# Kernel weights below this share of the largest are the window's float rounding around its zeros
# (about 1e-10 against 0.7): dropping them changes no output sample by more than about 1e-7.
NEGLIGIBLE_TAP = 1e-9


@functools.lru_cache(maxsize=16)
def _resample_taps(from_rate: int, to_rate: int, lowpass_width: int) -> _ResampleTaps:
    """Built once per pair of rates: it takes about 0.25 s of CPU (22.05 -> 16 kHz), which a hundred
    streams starting together paid a hundred times, saturating the CPU for their first seconds."""
    # The kernel builder is private in torchaudio; torchaudio is pinned in pyproject.toml.
    from torchaudio.functional.functional import _get_sinc_resample_kernel

    gcd = math.gcd(from_rate, to_rate)
    kernel, width = _get_sinc_resample_kernel(from_rate, to_rate, gcd, lowpass_width, dtype=torch.float32)
    # (out_step, span): each output phase weighs the whole span, but the window is zero beyond
    # lowpass_width zero crossings of the sinc, so only a band of about 2 * lowpass_width input samples
    # counts (17 of 459 for 22.05 -> 16 kHz). Computing only the band is about 25x fewer multiply-adds.
    # numpy rather than torch because every source thread calling a torch op gets its own OpenMP
    # team: with 40 streams that was 80 spinning threads and half the CPU of the whole runtime.
    matrix = kernel[:, 0, :].numpy()
    live = np.abs(matrix) > np.abs(matrix).max() * NEGLIGIBLE_TAP
    first = live.argmax(axis=1)
    last = matrix.shape[1] - 1 - live[:, ::-1].argmax(axis=1)
    band = int((last - first).max()) + 1
    first = np.minimum(first, matrix.shape[1] - band)
    index = first[:, None] + np.arange(band)
    taps = np.take_along_axis(matrix, index, axis=1).astype(np.float32)
    for array in (index, taps):
        array.flags.writeable = False  # shared by every resampler of these rates, on any thread
    return _ResampleTaps(index, taps, width)


class StreamingResampler:
    """Chunk-by-chunk resampling whose output equals `resample()` on the whole signal.

    torchaudio's resampler is a strided convolution: every block of new/gcd output samples reads
    a fixed span of input around it, so blocks are computed as soon as their span has arrived and
    the rest is kept for the next chunk. Resampling chunks independently instead would click at
    every chunk boundary, and a live stream would then not match the same clip decoded offline.
    """

    LOWPASS_WIDTH = 6  # torchaudio.functional.resample's default filter length (zero crossings)

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} Hz -> {to_rate} Hz")
        self.from_rate, self.to_rate = int(from_rate), int(to_rate)
        self._identity = self.from_rate == self.to_rate
        if not self._identity:
            gcd = math.gcd(self.from_rate, self.to_rate)
            self._in_step, self._out_step = self.from_rate // gcd, self.to_rate // gcd
            self._taps = _resample_taps(self.from_rate, self.to_rate, self.LOWPASS_WIDTH)
            self._width = self._taps.width
        self.reset()

    def reset(self) -> None:
        self._n_in = 0  # input samples pushed so far
        self._n_out = 0  # output samples returned so far
        # Unconsumed input, starting at the first input sample of the next output block (with the
        # filter's left context, zeros before the signal starts).
        self._pending = np.zeros(self._width if not self._identity else 0, np.float32)

    def _blocks(self, signal: np.ndarray) -> np.ndarray:
        span = 2 * self._width + self._in_step  # input samples read by one output block
        if len(signal) < span:
            self._pending = signal
            return np.zeros(0, np.float32)
        n_blocks = (len(signal) - span) // self._in_step + 1
        starts = np.arange(n_blocks) * self._in_step
        reads = signal[starts[:, None, None] + self._taps.index]  # (blocks, out_step, band)
        self._pending = signal[n_blocks * self._in_step :]
        return np.einsum("bjk,jk->bj", reads, self._taps.taps).reshape(-1)

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Resamples the next piece of a mono float32 signal; returns the output samples now complete."""
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        self._n_in += len(audio)
        if self._identity:
            self._n_out += len(audio)
            return audio
        out = self._blocks(np.concatenate([self._pending, audio]))
        self._n_out += len(out)
        return out

    def flush(self) -> np.ndarray:
        """The output samples that wait for input past the end: call once when the signal ends."""
        if self._identity:
            return np.zeros(0, np.float32)
        tail = np.concatenate([self._pending, np.zeros(self._width + self._in_step, np.float32)])
        out = self._blocks(tail)
        total = math.ceil(self._out_step * self._n_in / self._in_step)  # torchaudio's output length
        out = out[: max(0, total - self._n_out)]
        self._n_out += len(out)
        self._pending = np.zeros(0, np.float32)
        return out
