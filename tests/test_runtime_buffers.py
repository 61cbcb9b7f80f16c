"""Ring buffers, windowing and streaming resampling: the pure pieces between sources and networks."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamrec.core.media import StreamingResampler, resample
from streamrec.runtime.ringbuffer import AudioRing, FrameRing
from streamrec.runtime.types import AudioChunk, Frame
from streamrec.runtime.windowing import AudioWindower, FrameWindower, WindowSpec, frames_for_update

RATE = 1000  # Hz: small numbers keep the arithmetic readable


def chunk(values: np.ndarray, media_time: float, capture_time: float = 0.0) -> AudioChunk:
    return AudioChunk(np.asarray(values, np.float32), RATE, media_time, capture_time)


def frame(t: float) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), t, 100.0 + t)


def test_audio_ring_under_fill() -> None:
    ring = AudioRing(1000, RATE)
    assert ring.read_latest(10)[0].size == 0
    ring.write(chunk(np.arange(100), 0.0, capture_time=5.0))
    samples, t = ring.read_latest(300)
    assert samples.tolist() == list(range(100)) and t == pytest.approx(0.1)
    assert ring.read_window(100, 300) is None  # not enough samples for a full window
    padded = ring.read_window(100, 300, pad=True)  # the offline evaluation pads short clips at the end
    assert padded is not None and padded.samples[:100].tolist() == list(range(100)) and not padded.samples[100:].any()
    assert padded.end_time == pytest.approx(0.1) and padded.capture_time == 5.0


def test_audio_ring_exact_fill() -> None:
    ring = AudioRing(1000, RATE)
    ring.write(chunk(np.arange(1000), 2.0))
    samples, t = ring.read_latest(1000)
    assert samples.tolist() == list(range(1000)) and t == pytest.approx(3.0)
    window = ring.read_window(1000, 1000)
    assert window is not None and window.samples.tolist() == list(range(1000)) and window.end_index == 1000


def test_audio_ring_over_fill_keeps_the_newest() -> None:
    ring = AudioRing(1000, RATE)
    for start in range(0, 2500, 300):  # 2.5 x the capacity in chunks that straddle the wrap-around
        ring.write(chunk(np.arange(start, min(start + 300, 2500)), start / RATE, capture_time=start))
    samples, t = ring.read_latest(1000)
    assert samples.tolist() == list(range(1500, 2500)) and t == pytest.approx(2.5)
    assert ring.read_window(1400, 500) is None  # its start was overwritten
    window = ring.read_window(2000, 500)
    assert window is not None and window.samples.tolist() == list(range(1500, 2000))
    assert (
        window.end_time == pytest.approx(2.0) and window.capture_time == 1800
    )  # stamps of the chunk of its last sample
    # a single chunk larger than the ring: only its newest samples fit
    ring.write(chunk(np.arange(5000, 6500), 9.0))
    assert ring.read_latest(1000)[0].tolist() == list(range(5500, 6500)) and ring.total_written == 4000


def test_audio_ring_follows_media_time_across_a_gap() -> None:
    ring = AudioRing(1000, RATE)
    ring.write(chunk(np.zeros(300), 0.0))
    ring.write(chunk(np.ones(300), 10.0))  # after a reconnection the stream's clock jumped
    window = ring.read_window(600, 500)
    assert window is not None and window.end_time == pytest.approx(10.3)
    assert ring.read_window(300, 200).end_time == pytest.approx(0.3)  # type: ignore[union-attr]


def test_audio_ring_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="capacity"):
        AudioRing(0, RATE)
    ring = AudioRing(100, RATE)
    with pytest.raises(ValueError, match="Hz"):
        ring.write(AudioChunk(np.zeros(10, np.float32), 2 * RATE, 0.0, 0.0))
    with pytest.raises(ValueError, match="window"):
        ring.read_latest(101)
    with pytest.raises(ValueError, match="mono float32"):
        AudioChunk(np.zeros((10, 2), np.float32), RATE, 0.0, 0.0)


def test_audio_ring_concurrent_writer_and_reader() -> None:
    """A reader never sees a torn window: samples are a ramp, so every read must be consecutive."""
    ring = AudioRing(2048, RATE)
    total = 200_000  # float32 holds these integers exactly
    errors: list[str] = []

    def writer() -> None:
        rng = np.random.default_rng(0)
        start = 0
        while start < total:
            n = int(rng.integers(1, 700))
            ring.write(chunk(np.arange(start, min(start + n, total)), start / RATE))
            start += n

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while thread.is_alive() or reads == 0:
        samples, t = ring.read_latest(512)
        reads += 1
        if len(samples) and (np.any(np.diff(samples) != 1) or t != pytest.approx((samples[-1] + 1) / RATE)):
            errors.append(f"torn read ending at {samples[-1]}, t {t}")
    thread.join()
    assert not errors and ring.total_written == total
    assert ring.read_latest(3)[0].tolist() == [total - 3, total - 2, total - 1]


def test_frame_ring_keeps_the_last_k() -> None:
    ring = FrameRing(3)
    for t in range(5):
        ring.write(frame(float(t)))
    frames, total = ring.snapshot()
    assert [f.media_time for f in frames] == [2.0, 3.0, 4.0] and total == 5
    assert [f.media_time for f in ring.latest(2)] == [3.0, 4.0]


def test_windows_are_due_on_the_offline_schedule_whatever_the_chunking() -> None:
    spec = WindowSpec.from_seconds(RATE, window_seconds=1.0, hop_seconds=0.5)
    assert (spec.size, spec.hop) == (1000, 500)
    windower, written, ends = AudioWindower(spec), 0, []
    for n in np.random.default_rng(1).integers(1, 400, size=60):
        written += int(n)
        ends += windower.due(written)
    assert ends == spec.ends(written) and ends[:3] == [1000, 1500, 2000]
    assert windower.due(written) == []  # nothing twice


def test_latest_only_skips_to_the_present_and_limit_keeps_the_rest() -> None:
    windower = AudioWindower(WindowSpec(1000, 500))
    assert windower.due(3100, latest_only=True) == [3000] and windower.skipped == 4
    assert windower.due(4000, limit=1) == [3500] and windower.due(4000) == [4000]


def test_a_stream_shorter_than_a_window_gets_one_padded_window() -> None:
    windower = AudioWindower(WindowSpec(1000, 500))
    assert windower.due(400) == [] and windower.has_tail(400)
    assert windower.tail(400) == 400 and windower.tail(400) is None
    longer = AudioWindower(WindowSpec(1000, 500))
    longer.due(1200)
    assert not longer.has_tail(1200)  # a stream with windows has no tail window


def test_frame_windower_and_frame_choice() -> None:
    windower = FrameWindower()
    assert windower.due(3) == [1, 2, 3] and windower.due(5, latest_only=True) == [5] and windower.skipped == 1
    frames = [frame(t) for t in (0.0, 1.0, 2.0, 3.0, 9.0)]
    assert [f.media_time for f in frames_for_update(frames, 2.0, k=2, max_age=6)] == [1.0, 2.0]
    assert [f.media_time for f in frames_for_update(frames, 2.5, k=5, max_age=6)] == [0.0, 1.0, 2.0]  # none ahead
    assert [f.media_time for f in frames_for_update(frames, 12.0, k=5, max_age=4)] == [9.0]  # none stale
    with pytest.raises(ValueError, match="hop"):
        WindowSpec.from_seconds(RATE, 1.0, 0.0)


@pytest.mark.parametrize("rates", [(44100, 16000), (48000, 16000), (8000, 16000), (16000, 16000)])
def test_streaming_resampler_equals_resampling_the_whole_signal(rates: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    signal = rng.standard_normal(rates[0] + 123).astype(np.float32)
    resampler, pieces, start = StreamingResampler(*rates), [], 0
    while start < len(signal):
        n = int(rng.integers(1, 2000))
        pieces.append(resampler.push(signal[start : start + n]))
        start += n
    pieces.append(resampler.flush())
    np.testing.assert_allclose(np.concatenate(pieces), resample(signal, *rates), atol=1e-5)
