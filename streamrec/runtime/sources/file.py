"""Files and URLs (RTSP, HTTP, HLS, ...) decoded with PyAV into audio chunks and 1 fps frames.

Audio is downmixed and resampled to the model rate exactly as media.decode_audio does for a whole
file (StreamingResampler equals its result), frames are sampled with media.FrameSampler and
preprocessed as in training, so a clip streamed here gives the windows the offline evaluation sees.
Items of the two streams are released in media-time order (files interleave them in blocks), paced
in real time or as fast as the runtime takes them; real-time audio is released once per update window
(WindowHold), since nothing reads it sooner. Both streams share the file's one time axis
(media.Timeline: offsets kept, timestamp resets bridged). A URL that fails or ends while live is
reopened with back-off, unless the error cannot mend (no such protocol, HTTP 4xx) on a URL that never
delivered; a packet that fails to decode is skipped and counted; a truncated file ends its stream
with state error.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path

import av
import numpy as np

from streamrec.core.features import preprocess_frame
from streamrec.core.media import (
    CorruptPackets,
    DecodeOnlyNeeded,
    Extent,
    FrameSampler,
    MediaError,
    MonoConverter,
    StreamingResampler,
    Timeline,
    open_container,
    seconds,
)
from streamrec.runtime.sources.base import CaptureFormat, Emit, Pacer, ReconnectPolicy, SourceError
from streamrec.runtime.sources.release import Interleaver, Pending, WindowHold
from streamrec.runtime.types import AudioChunk, Frame, SourceInfo, StateChange

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
FILE_MAX_LEAD = 2.0  # seconds one stream of a file may run ahead while the other is awaited
LIVE_MAX_LEAD = 0.2  # the same for a live URL, where waiting is latency
# A file decoded as fast as possible resamples and delivers its audio in pieces of at least this many
# seconds, not packet by packet: the per-piece costs (resampling set-up, interleaving, the ring's lock)
# were most of the source's CPU in `streamrec run --fast`. Real-time streams deliver every packet at once.
AUDIO_PIECE_SECONDS = 0.25
DECODE_AHEAD, DECODE_AHEAD_LEFT = 0.3, 0.05  # seconds: a paced file's decoding bursts (FileSource._due_from)
OPEN_TIMEOUT = 5.0  # seconds to open a URL
READ_TIMEOUT = 5.0  # seconds without data before a URL counts as lost
LIVE_PROTOCOLS = ("rtsp", "rtmp", "udp", "srt", "rtp", "tcp")
# FFmpeg probes 5 s of a stream by default before the first frame; live protocols announce their
# codecs, so half a second of probing opens an RTSP camera in ~0.7 s instead of ~3 s.
LIVE_PROBE = {"analyzeduration": "500000", "probesize": "100000"}  # microseconds, bytes
HOST_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")  # no listening mode: a host is needed
# Errors a retry cannot mend: FFmpeg lacks the protocol, the server refuses the path (HTTP and RTSP
# 4xx), an invalid argument (a port out of range), or what answers is not media.
PERMANENT_ERRORS = (
    av.error.ProtocolNotFoundError,
    av.error.HTTPClientError,
    av.error.ArgumentError,
    av.error.InvalidDataError,
    av.error.DemuxerNotFoundError,
)
# Pixels per second from which a video decoded as fast as possible uses frame threads. Measured here (2
# cores, H.264 with B-frames): at 640x480x30 one thread takes 28 ms of wall per second of media against 21
# with threads, for the same CPU, more than the frame network's 11 ms; at 320x240x10 the threads add 10-30 %
# of the source's CPU, and `streamrec run --fast` of the example clip went from 78x to 85x real time without.
FRAME_THREADS_FROM = 640 * 480 * 25
AUDIO_GAP = 0.05  # seconds: a longer gap in the audio's timestamps is filled with silence


def is_url(target: str) -> bool:
    scheme, sep, _ = target.partition("://")
    return bool(sep) and scheme.lower() in URL_SCHEMES


def lower_scheme(url: str) -> str:
    """The URL with its scheme in lower case, as FFmpeg's protocol names are (`HTTP://` was "Protocol
    not found")."""
    scheme, _, rest = url.partition("://")
    return scheme.lower() + "://" + rest


def check_url(url: str) -> None:
    """Raises SourceError for a URL that cannot work: no host, a port outside 1-65535."""
    url = lower_scheme(url)
    scheme = url.partition("://")[0]
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError when out of range
    except ValueError as e:
        raise SourceError(f"malformed URL {url}: {e}") from e
    if port == 0:
        raise SourceError(f"malformed URL {url}: port 0 cannot be connected to (ports are 1-65535)")
    if scheme in HOST_SCHEMES and not parts.hostname:
        raise SourceError(f"malformed URL {url}: it names no host ({scheme}://HOST[:PORT]/PATH)")


class _Permanent(MediaError):
    """A URL that cannot work as given: retrying would not mend it."""


class _Stop(Exception):
    """The runtime asked the source to stop, or --duration was reached."""


class FileSource:
    """A media file or URL. realtime paces items at their media time; otherwise they go as fast as
    `emit` accepts them. duration: seconds of media after which the source ends."""

    def __init__(
        self,
        target: str | Path,
        fmt: CaptureFormat,
        realtime: bool = False,
        duration: float | None = None,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        if duration is not None and duration <= 0:
            raise ValueError(f"duration must be positive seconds, got {duration}")
        self.is_url = is_url(str(target))
        self.target = lower_scheme(str(target)) if self.is_url else str(target)  # prepare() checks the rest
        self.description = self.target
        self.fmt = fmt
        self.realtime = realtime
        self.duration = duration
        self.reconnect = reconnect or ReconnectPolicy()
        self._pacer = Pacer(realtime)
        self._last_end = 0.0  # newest media time delivered, seconds
        self._last_wall: float | None = None  # monotonic time it was delivered
        self._live = False  # set per connection: a URL without a declared duration
        self._clock = "audio"
        self._corrupt = CorruptPackets(self.description)  # over every connection: one warning per source
        self._hold: WindowHold | None = None  # per connection: real-time audio awaiting its window

    def prepare(self) -> None:
        if self.is_url:
            check_url(self.target)
        elif not Path(self.target).is_file():
            raise SourceError(f"no such media file: {self.target}")

    def run(self, emit: Emit, stop: threading.Event) -> None:
        try:
            self._run(emit, stop)
        except _Stop:
            pass
        except Exception as e:  # a source never takes the runtime down: its stream ends in error
            log.exception("source %s failed", self.target)
            emit(StateChange("error", f"{type(e).__name__}: {e}"))

    def _run(self, emit: Emit, stop: threading.Event) -> None:
        delays = self.reconnect.delays()
        outage_since: float | None = None
        while not stop.is_set():
            delivered_before = self._last_wall
            try:
                self._play(emit, stop)
                if not self.is_url or not self._live:
                    detail = "end of media"
                    if self._corrupt.count:
                        detail += f" ({self._corrupt.count} corrupt packets skipped)"
                    emit(StateChange("ended", detail))
                    return
                reason = "the stream ended"
            except MediaError as e:
                # Reopen a live stream, or a URL that could not be opened; a file or a recording that
                # broke after delivering data would only start over from its beginning, and a URL that
                # never delivered and fails in a way a retry cannot mend is reported at once.
                broke = not self._live and self._last_wall != delivered_before
                if not self.is_url or broke or (isinstance(e, _Permanent) and self._last_wall is None):
                    emit(StateChange("error", str(e)))
                    return
                reason = str(e)
            if stop.is_set():
                return
            if self._last_wall != delivered_before:  # data flowed: a fresh outage starts now
                outage_since, delays = None, self.reconnect.delays()
            outage_since = outage_since if outage_since is not None else time.monotonic()
            give_up = self.reconnect.give_up_after
            if give_up is not None and time.monotonic() - outage_since > give_up:
                emit(StateChange("error", f"gave up after {give_up:g} s without a connection: {reason}"))
                return
            delay = next(delays)
            log.info("%s: %s; reconnecting in %.1f s", self.target, reason, delay)
            emit(StateChange("reconnecting", f"{reason}; retrying in {delay:.1f} s"))
            stop.wait(delay)

    def _open(self) -> av.container.InputContainer:
        try:
            if self.is_url:
                options = dict(LIVE_PROBE) if self.target.lower().startswith(LIVE_PROTOCOLS) else {}
                if self.target.lower().startswith("rtsp"):
                    options["rtsp_transport"] = "tcp"  # no lost UDP packets on a busy machine
                return open_container(self.target, options=options, timeout=(OPEN_TIMEOUT, READ_TIMEOUT))
            return open_container(self.target)
        except PERMANENT_ERRORS as e:
            raise _Permanent(f"cannot open {self.target}: {_why(e, OPEN_TIMEOUT)}") from e
        except (av.error.FFmpegError, OSError) as e:
            raise MediaError(f"cannot open {self.target}: {_why(e, OPEN_TIMEOUT)}") from e

    def _play(self, emit: Emit, stop: threading.Event) -> None:
        """One connection (or one pass over a file), from opening to the end of its data."""
        with self._open() as container:
            audio = container.streams.audio[0] if container.streams.audio else None
            video = container.streams.video[0] if container.streams.video else None
            if audio is None and video is None:
                raise MediaError(f"{self.target} has neither an audio nor a video stream")
            # A stream without a declared duration is live: its end is an outage, not the end of media.
            self._live = self.is_url and container.duration is None
            self._clock = "audio" if audio is not None else "video"  # the stream --duration is measured on
            offset = self._media_offset()
            emit(SourceInfo(audio=audio is not None, video=video is not None))
            reconnected = self._last_wall is not None
            emit(StateChange("started", ("reconnected: " if reconnected else "") + _describe(audio, video)))
            # A live stream arrives in real time by itself: pacing it again would only add its
            # opening burst as latency. Files and recordings behind URLs are paced when realtime.
            self._pacer.enabled = self.realtime and not self._live
            self._pacer.reset()
            realtime = self._pacer.enabled or self._live
            # Audio of a lost live connection is dropped with it, so holding starts afresh on each.
            self._hold = WindowHold(self.fmt.windows) if realtime and self.fmt.windows is not None else None
            decoder = _Decoder(self.target, audio, video, self.fmt, offset, realtime, self._corrupt)
            merge = Interleaver(
                tuple(k for k, s in (("audio", audio), ("video", video)) if s is not None),
                LIVE_MAX_LEAD if self._live else FILE_MAX_LEAD,
            )
            backlog: deque[Pending] = deque()  # decoded, in media-time order, not yet delivered
            try:
                for packet in container.demux([s for s in (audio, video) if s is not None]):
                    if stop.is_set():
                        raise _Stop
                    for item in decoder.decode(packet):
                        merge.push(item)
                    backlog.extend(merge.ready())
                    self._deliver(self._due_from(backlog), emit, stop)
            except av.error.FFmpegError as e:
                if not self._live:  # what decoded is delivered first, the audio held for a piece included
                    self._deliver(_rest(decoder, merge, backlog), emit, stop, last=True)
                raise MediaError(
                    f"{'connection lost' if self.is_url else 'corrupt media'} in {self.target}: {_why(e, READ_TIMEOUT)}"
                ) from e
            if self._live:
                # A lost live connection: what it still holds is as old as the outage (seconds), and
                # delivering it now would say data flows again before the stream reconnects.
                return
            self._deliver(_rest(decoder, merge, backlog), emit, stop, last=True)
            decoder.check_complete(container)

    def _due_from(self, backlog: deque[Pending]) -> list[Pending]:
        """What to deliver now. A paced file is decoded in bursts: DECODE_AHEAD seconds of it at once,
        then delivered item by item at its media time down to DECODE_AHEAD_LEFT, so that the next burst is
        decoded before the next item is due. Everything else is delivered as it is decoded."""
        if not self._pacer.enabled:
            out = list(backlog)
            backlog.clear()
            return out
        if not backlog or backlog[-1].key - backlog[0].key < DECODE_AHEAD:
            return []
        keep_from = backlog[-1].key - DECODE_AHEAD_LEFT
        out = []
        while backlog and backlog[0].key < keep_from:
            out.append(backlog.popleft())
        return out

    def _media_offset(self) -> float:
        """Media time of a new connection's start: the stream's clock keeps running across an outage."""
        if self._last_wall is None:  # nothing delivered yet: the stream starts now
            return 0.0
        return self._last_end + (time.monotonic() - self._last_wall)

    def _deliver(self, items: list[Pending], emit: Emit, stop: threading.Event, last: bool = False) -> None:
        """Releases items at their media time (when paced); last: the connection's data ends with them."""
        for item in items:
            if self.duration is not None and item.media_time >= self.duration:
                if item.kind == self._clock:  # the stream that drives updates has passed the duration
                    self._release_held(emit, stop)
                    emit(StateChange("ended", f"reached the duration of {self.duration:g} s"))
                    raise _Stop
                continue  # a frame past the duration while the audio still runs up to it
            data = item.data
            if self.duration is not None and item.kind == "audio":
                # Cut the chunk that straddles the duration, so the last window ends exactly there.
                data = data[: max(1, round((self.duration - item.media_time) * self.fmt.sample_rate))]
            if item.kind == "audio" and self._hold is not None:
                if not self._hold.add(data, item.media_time, item.key):
                    self._pacer.start(item.key)
                    continue
                data, media_time = self._hold.take()
                self._release(emit, stop, item.key, "audio", data, media_time)
            else:
                self._release(emit, stop, item.key, item.kind, data, item.media_time)
        if last:
            self._release_held(emit, stop)

    def _release_held(self, emit: Emit, stop: threading.Event) -> None:
        """Audio held for a window that the data's end or the duration cut short."""
        if self._hold:
            key = self._hold.key
            data, media_time = self._hold.take()
            self._release(emit, stop, key, "audio", data, media_time)

    def _release(
        self, emit: Emit, stop: threading.Event, key: float, kind: str, data: np.ndarray, media_time: float
    ) -> None:
        """Emits one item once `key` (its media time of availability) is due, stamped with the wall time."""
        self._pacer.wait(key, stop)
        if stop.is_set():
            raise _Stop
        now = time.time()
        if kind == "audio":
            emit(AudioChunk(data, self.fmt.sample_rate, media_time, now))
        else:
            emit(Frame(data, media_time, now))
        self._last_end, self._last_wall = max(self._last_end, key), time.monotonic()


class _Decoder:
    """Decodes packets of one connection into Pending items stamped with media time."""

    def __init__(
        self,
        target: str,
        audio: av.audio.stream.AudioStream | None,
        video: av.video.stream.VideoStream | None,
        fmt: CaptureFormat,
        offset: float,
        realtime: bool = False,
        corrupt: CorruptPackets | None = None,
    ) -> None:
        self.target, self.audio, self.video, self.fmt, self.offset = target, audio, video, fmt, offset
        streams = [s for s in (audio, video) if s is not None]
        self._timeline = Timeline(streams)  # the connection's one time axis; offset puts it on the source's
        self._extent = Extent(streams)
        self._corrupt = corrupt or CorruptPackets(target)
        self._samples_out = 0  # samples at the model rate delivered so far
        self._native_samples = 0
        self._audio_start: float | None = None  # seconds on the timeline of the first audio sample
        self._audio_step = 0.0  # seconds of the previous audio frame
        self._piece = 0 if realtime or audio is None else round(AUDIO_PIECE_SECONDS * audio.rate)  # native samples
        self._held: list[np.ndarray] = []  # native audio not yet resampled, fewer than _piece samples
        self._held_samples = 0
        self._frame_step = 0.0  # seconds between video frames
        self._sampler = FrameSampler(fmt.frames.fps, fmt.frame_phase)
        if audio is not None:
            # As media.decode_audio: PyAV converts format and downmixes; the rate change is torchaudio's.
            self._converter = MonoConverter(audio.rate)
            self._resampler = StreamingResampler(audio.rate, fmt.sample_rate)
        if video is not None:
            # Frame threads hold back each frame by one per thread and multiply threads by streams; a
            # real-time stream needs no more than one core's share. They speed up a fast decode of a large
            # video, where one thread would be the run's critical path, but cost CPU on a small one.
            if realtime or _pixel_rate(video) < FRAME_THREADS_FROM:
                video.codec_context.thread_count = 1
            else:
                video.thread_type = "AUTO"
            self._frame_step = 1.0 / float(video.average_rate) if video.average_rate else 0.0
            self._only_needed = DecodeOnlyNeeded(video, self._sampler)  # 1 fps of 25-30: skip what is dropped

    def decode(self, packet: av.packet.Packet) -> list[Pending]:
        self._extent.add(packet)
        out: list[Pending] = []
        if self.video is not None and packet.stream.index == self.video.index:
            self._only_needed.before(packet)
        for frame in self._corrupt.decode(packet):
            if isinstance(frame, av.AudioFrame):
                out += self._audio_frame(frame)
            elif isinstance(frame, av.VideoFrame) and frame.pts is not None:
                timestamp = seconds(frame.pts, frame.time_base)
                t = self._timeline.time("video", timestamp, self._frame_step)
                if self._sampler.take(t):
                    self._only_needed.kept(timestamp, t)
                    image = preprocess_frame(frame.to_ndarray(format="rgb24"), self.fmt.frames)
                    out.append(Pending(self.offset + t, "video", image, self.offset + t))
        return out

    def _audio_frame(self, frame: av.AudioFrame) -> list[Pending]:
        out: list[Pending] = []
        if frame.pts is not None and frame.time_base is not None:
            t = self._timeline.time("audio", seconds(frame.pts, frame.time_base), self._audio_step)
            if self._audio_start is None:
                self._audio_start = t
            # Samples are counted, not stamped: a gap in the timestamps (packets lost, or skipped as
            # corrupt) becomes silence, so that the audio after it keeps its place beside the video.
            gap = t - (self._audio_start + self._native_samples / frame.sample_rate)
            if gap > AUDIO_GAP:
                out += self._audio_item(np.zeros(round(gap * frame.sample_rate), np.float32))
        elif self._audio_start is None:
            self._audio_start = 0.0
        self._audio_step = frame.samples / frame.sample_rate
        for native in self._converter.convert(frame):
            out += self._audio_item(native)
        return out

    def _audio_item(self, native: np.ndarray) -> list[Pending]:
        self._native_samples += len(native)
        self._held.append(native)
        self._held_samples += len(native)
        return self._release() if self._held_samples >= self._piece else []

    def _release(self) -> list[Pending]:
        """The held native audio, resampled, as one item."""
        native = self._held[0] if len(self._held) == 1 else np.concatenate(self._held)
        self._held, self._held_samples = [], 0
        return self._samples_item(self._resampler.push(native) if len(native) else native)

    def _samples_item(self, samples: np.ndarray) -> list[Pending]:
        if not len(samples):
            return []
        zero = self.offset + (self._audio_start or 0.0)  # media time of the first sample
        start = zero + self._samples_out / self.fmt.sample_rate
        self._samples_out += len(samples)
        end = zero + self._samples_out / self.fmt.sample_rate
        return [Pending(end, "audio", samples, start)]

    def finish(self) -> list[Pending]:
        """What the converter and the resampler still hold at the end of the data."""
        if self.audio is None:
            return []
        out: list[Pending] = []
        for native in self._converter.flush():
            out += self._audio_item(native)
        if self._held:
            out += self._release()
        return out + self._samples_item(self._resampler.flush())

    def check_complete(self, container: av.container.InputContainer) -> None:
        """Raises MediaError when the file ended well before the durations it declares (media.Extent)."""
        self._extent.check(self.target, container)


def _rest(decoder: _Decoder, merge: Interleaver, backlog: deque[Pending]) -> list[Pending]:
    """Everything still undelivered at the end of a connection's data, in media-time order: the backlog,
    then what the interleaver and the decoder (its held audio and the resampler's tail) still hold."""
    for item in decoder.finish():
        merge.push(item)
    return [*backlog, *merge.flush()]


def _pixel_rate(video: av.video.stream.VideoStream) -> float:
    """Pixels per second the stream declares (0 when it declares no frame rate)."""
    return video.width * video.height * float(video.average_rate or 0)


def _why(error: Exception, timeout: float) -> str:
    """FFmpeg's reason in words, without its error number and the URL again; its "Immediate exit
    requested" is PyAV's timeout."""
    if isinstance(error, av.error.ExitError):
        return f"no answer for {timeout:g} s"
    return getattr(error, "strerror", None) or str(error)


def _describe(audio: av.audio.stream.AudioStream | None, video: av.video.stream.VideoStream | None) -> str:
    parts = []
    if audio is not None:
        parts.append(f"audio {audio.codec_context.name} {audio.rate} Hz")
    if video is not None:
        rate = f" @ {float(video.average_rate):.3g} fps" if video.average_rate else ""
        parts.append(f"video {video.codec_context.name} {video.width}x{video.height}{rate}")
    return ", ".join(parts)


def decode_costs(target: str | Path, fmt: CaptureFormat) -> list[tuple[float, float]]:
    """(media time, seconds of CPU wall spent) per packet of a file, decoded, resampled and preprocessed
    exactly as FileSource does it: the decode stage of `streamrec bench`."""
    costs = []
    with open_container(str(target)) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        video = container.streams.video[0] if container.streams.video else None
        decoder = _Decoder(str(target), audio, video, fmt, 0.0, realtime=True)
        clock = 0.0
        for packet in container.demux([s for s in (audio, video) if s is not None]):
            start = time.perf_counter()
            items = decoder.decode(packet)
            elapsed = time.perf_counter() - start
            clock = max([clock] + [item.media_time for item in items])
            costs.append((clock, elapsed))
    return costs
