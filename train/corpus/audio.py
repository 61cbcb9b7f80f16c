"""Rendering instruments (fluidsynth, one-note recordings, Hydrogen drum samples) and user-generated-video
degradations.

Signals are mono float32 numpy arrays in [-1, 1] at AUDIO_RATE Hz unless said otherwise.
"""

from __future__ import annotations

import ctypes
import functools
import subprocess
import wave
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from streamrec.core.media import decode_audio
from streamrec.train.corpus.melodies import DrumPattern, Note
from streamrec.train.corpus.sources import DrumKit, soundfonts

# pyfluidsynth is imported where a synth is made: it loads the system's libfluidsynth.

AUDIO_RATE = 22050  # Hz, the rate of every audio track in the corpus
BLOCK = 64  # samples, FluidSynth's internal block (FLUID_BUFSIZE)

# General MIDI note numbers of the drum roles (channel 10).
GM_DRUM_NOTES = {"kick": 36, "snare": 38, "hat": 42, "open_hat": 46, "tom": 45, "crash": 49, "ride": 51}


def write_wav(path: Path, signal: np.ndarray, rate: int = AUDIO_RATE) -> None:
    """16-bit PCM mono WAV."""
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


class SoundfontSynth:
    """fluidsynth (through pyfluidsynth) with the training soundfonts loaded once per process.

    Loading MuseScore General's compressed samples takes seconds, so a worker keeps one synth and
    renders every clip on it; reverb and chorus are off (room effects are added separately).
    """

    def __init__(self, soundfonts: list[Path]) -> None:
        import fluidsynth  # pyfluidsynth: ctypes binding of the system's libfluidsynth

        # Effects off before the synth is created: set afterwards, their tails leak from clip to clip.
        options = {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1}
        self._synth = fluidsynth.Synth(gain=0.7, samplerate=float(AUDIO_RATE), **options)
        self._ids = {}
        for path in soundfonts:
            sf_id = self._synth.sfload(str(path))
            if sf_id < 0:
                raise RuntimeError(f"fluidsynth cannot load soundfont {path}")
            self._ids[path.name] = sf_id
        self._write_float = fluidsynth.cfunc(
            "fluid_synth_write_float",
            ctypes.c_int,
            ("synth", ctypes.c_void_p, 1),
            ("len", ctypes.c_int, 1),
            ("lout", ctypes.c_void_p, 1),
            ("loff", ctypes.c_int, 1),
            ("lincr", ctypes.c_int, 1),
            ("rout", ctypes.c_void_p, 1),
            ("roff", ctypes.c_int, 1),
            ("rincr", ctypes.c_int, 1),
        )
        # A fresh synth renders its first clip slightly differently from one that has been reset;
        # one throw-away clip puts every render in the same, reset state.
        self.render([(60, 0.0, 1.0, 100)], 120.0, 0, next(iter(self._ids)), 0.5)

    def render(
        self,
        events: list[tuple[int, float, float, int]],
        bpm: float,
        program: int,
        soundfont: str,
        seconds: float,
        drums: bool = False,
    ) -> np.ndarray:
        """events: (pitch, start beat, duration beats, velocity 1..127) -> mono float32, `seconds` long."""
        synth, channel = self._synth, 9 if drums else 0
        # Silence the previous clip at once (a reset would let notes ring out into this one).
        for c in range(16):
            synth.all_sounds_off(c)
        synth.system_reset()
        self._write(BLOCK * 512)
        synth.program_select(channel, self._ids[soundfont], 128 if drums else 0, program)
        beat = 60.0 / bpm
        timeline = sorted(
            [(start * beat, 1, pitch, velocity) for pitch, start, _, velocity in events]
            + [((start + dur) * beat, 0, pitch, 0) for pitch, start, dur, _ in events]
        )
        # FluidSynth renders in blocks of BLOCK samples and applies events at block starts: events on
        # the block grid (2.9 ms) and whole blocks per call keep a clip independent of what came before.
        wanted = round(seconds * AUDIO_RATE)
        total = -(-wanted // BLOCK) * BLOCK
        pieces, now = [], 0
        for t, is_on, pitch, velocity in timeline:  # offs sort before ons at the same time
            at = min(total, round(t * AUDIO_RATE / BLOCK) * BLOCK)
            if at > now:
                pieces.append(self._write(at - now))
                now = at
            if now >= total:
                break
            if is_on:
                synth.noteon(channel, pitch, velocity)
            else:
                synth.noteoff(channel, pitch)
        if now < total:
            pieces.append(self._write(total - now))
        return np.concatenate(pieces)[:wanted] if pieces else np.zeros(0, np.float32)

    def _write(self, n: int) -> np.ndarray:
        """n mono float32 samples. Float output, not pyfluidsynth's 16-bit one: FluidSynth dithers
        16-bit output from a running noise table, which would make a clip depend on the clips before."""
        left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
        pointer = ctypes.POINTER(ctypes.c_float)
        self._write_float(self._synth.synth, n, left.ctypes.data_as(pointer), 0, 1, right.ctypes.data_as(pointer), 0, 1)
        return (left + right) / 2


@functools.lru_cache(maxsize=2)
def soundfont_synth(fonts: tuple[Path, ...] | None = None) -> SoundfontSynth:
    """One synth per process and soundfont set (None: the training soundfonts)."""
    return SoundfontSynth(list(fonts) if fonts is not None else soundfonts())


@functools.lru_cache(maxsize=64)
def recording(path: Path) -> np.ndarray:
    """A recorded sound file (speech, noise) at AUDIO_RATE, decoded once per process."""
    return decode_audio(path, AUDIO_RATE)


def fit_length(signal: np.ndarray, n: int) -> np.ndarray:
    """Trims (the release tail) or zero-pads to exactly n samples."""
    if len(signal) >= n:
        return signal[:n].astype(np.float32)
    return np.concatenate([signal, np.zeros(n - len(signal), np.float32)]).astype(np.float32)


def loop_notes(notes: list[Note], beats: float, rng: np.random.Generator) -> list[Note]:
    """`beats` of a melody, starting at a random note, looping when the melody is shorter."""
    shift = -notes[int(rng.integers(0, max(1, len(notes) - 8)))][1]
    length = max(start + dur for _, start, dur in notes)
    out: list[Note] = []
    while shift < beats:
        for pitch, start, dur in notes:
            t = start + shift
            if 0 <= t < beats:
                out.append((pitch, t, min(dur, beats - t)))
        shift += length
    return out


def humanize(notes: list[Note], rng: np.random.Generator, base_velocity: int) -> list[tuple[int, float, float, int]]:
    """Adds velocity contour and small timing jitter (about +-15 ms at 100 bpm)."""
    events = []
    for pitch, start, dur in notes:
        velocity = int(np.clip(base_velocity + rng.normal(0, 10), 30, 127))
        jitter = float(rng.normal(0, 0.025))
        events.append((pitch, max(0.0, start + jitter), max(0.05, dur * rng.uniform(0.8, 1.0)), velocity))
    return events


def accompaniment(melody: list[Note], style: str, low: int, beats: float, rng: np.random.Generator) -> list[Note]:
    """Chords under a melody: one triad every two beats, rooted on the melody note sounding then.

    style: "block" (sustained chords: organ, accordion, piano), "strum" (guitar: notes 30 ms apart),
    "roll" (banjo: repeating 8th-note arpeggios).
    """
    chords: list[Note] = []
    step = 2.0
    t = 0.0
    while t < beats:
        sounding = [p for p, s, d in melody if s <= t < s + d] or [melody[0][0]]
        root = sounding[0]
        while root - 12 >= low:
            root -= 12
        third = 4 if rng.random() < 0.6 else 3
        tones = [root, root + third, root + 7]
        if style == "strum":
            chords += [(p, t + k * 0.06, step - k * 0.06) for k, p in enumerate(tones + [root + 12])]
        elif style == "roll":
            pattern = [tones[0], tones[1], tones[2], tones[1] + 12, tones[0] + 12, tones[2], tones[1], tones[2] + 12]
            chords += [(p, t + k * 0.25, 0.3) for k, p in enumerate(pattern) if t + k * 0.25 < beats]
        else:
            chords += [(p, t, step * 0.95) for p in tones]
        t += step
    return chords


def render_hits(
    pattern: DrumPattern, bpm: float, seconds: float, rng: np.random.Generator
) -> list[tuple[str, float, float]]:
    """(role, time in seconds, velocity) for a pattern looped over `seconds`."""
    hits = []
    beat_seconds = 60.0 / bpm
    loop = 0
    while loop * pattern.length_beats * beat_seconds < seconds:
        for role, start, velocity in pattern.hits:
            t = (loop * pattern.length_beats + start) * beat_seconds + float(rng.normal(0, 0.004))
            if 0 <= t < seconds:
                hits.append((role, t, velocity))
        loop += 1
    return hits


def render_gm_drums(
    pattern: DrumPattern,
    kit: int,
    soundfont: str,
    bpm: float,
    seconds: float,
    rng: np.random.Generator,
    fonts: tuple[Path, ...] | None = None,
) -> np.ndarray:
    """A drum pattern on a General MIDI kit (bank 128) of a soundfont (one of `fonts`), on channel 10."""
    beats_per_second = bpm / 60.0
    events = [
        (GM_DRUM_NOTES[role], t * beats_per_second, 0.25, int(np.clip(v * 120, 20, 127)))
        for role, t, v in render_hits(pattern, bpm, seconds, rng)
    ]
    return soundfont_synth(fonts).render(events, bpm, kit, soundfont, seconds, drums=True)


SAMPLER_CENTRE = 60  # the note a one-note recording sounds unshifted; melodies are fitted around it
SAMPLER_SPAN = 9  # semitones either side of the centre: a plain sampler stretches a recording about this far
SAMPLER_RELEASE = 0.08  # seconds of fade after a note's end
SAMPLER_MAX_SECONDS = 4.0  # no note lasts longer, so longer recordings are cut here


@functools.lru_cache(maxsize=512)
def _shifted_recording(path: Path, semitones: int) -> np.ndarray:
    """A one-note recording, peak-normalised, resampled so that it sounds `semitones` higher (and shorter),
    the way a sampler without time-stretching plays it: pitch and formants move together."""
    signal = decode_audio(path, AUDIO_RATE)
    if signal is None or not len(signal):
        raise RuntimeError(f"empty instrument recording {path}")
    signal = signal[: round(SAMPLER_MAX_SECONDS * AUDIO_RATE)]
    signal = signal / (np.max(np.abs(signal)) + 1e-9)
    if semitones == 0:
        return signal.astype(np.float32)
    ratio = 2 ** (semitones / 12)  # read `ratio` times faster: orig_freq / new_freq = ratio
    shifted = AF.resample(torch.from_numpy(signal.astype(np.float32)), round(1000 * ratio), 1000)
    return shifted.numpy()


def render_sampled(
    events: list[tuple[int, float, float, int]], bpm: float, recording_path: Path, seconds: float
) -> np.ndarray:
    """events (pitch, start beat, duration beats, velocity) played on one recorded note: each note is the
    recording shifted by its distance from SAMPLER_CENTRE (clamped to an octave), cut at the note's end with a
    short release. Mono float32, `seconds` long."""
    beat = 60.0 / bpm
    out = np.zeros(round((seconds + 1) * AUDIO_RATE), np.float32)
    release = round(SAMPLER_RELEASE * AUDIO_RATE)
    for pitch, start, duration, velocity in events:
        note = _shifted_recording(recording_path, int(np.clip(pitch - SAMPLER_CENTRE, -12, 12)))
        at = round(start * beat * AUDIO_RATE)
        length = min(len(note), round(duration * beat * AUDIO_RATE) + release, len(out) - at)
        if length <= 0:
            continue
        part = note[:length] * (velocity / 127) ** 1.5
        fade = min(release, length)
        part[length - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
        out[at : at + length] += part
    return fit_length(out, round(seconds * AUDIO_RATE))


@functools.lru_cache(maxsize=256)
def _drum_sample(path: Path) -> np.ndarray:
    sample = decode_audio(path, AUDIO_RATE)
    if sample is None or not len(sample):
        raise RuntimeError(f"empty drum sample {path}")
    return sample[: AUDIO_RATE * 2]  # a cymbal's 2 s is plenty


def render_hydrogen(
    pattern: DrumPattern, kit: DrumKit, bpm: float, seconds: float, rng: np.random.Generator
) -> np.ndarray:
    """A drum pattern played from a Hydrogen kit's real drum samples."""
    out = np.zeros(round(seconds * AUDIO_RATE) + 2 * AUDIO_RATE, np.float32)
    for role, t, velocity in render_hits(pattern, bpm, seconds, rng):
        files = kit.samples.get(role) or kit.samples.get(
            {"open_hat": "hat", "ride": "hat", "crash": "hat", "tom": "snare"}.get(role, "kick")
        )
        if not files:
            continue
        sample = _drum_sample(files[int(rng.integers(0, len(files)))])
        start = round(t * AUDIO_RATE)
        out[start : start + len(sample)] += velocity * sample
    return fit_length(out, round(seconds * AUDIO_RATE))


# --- background and degradations -------------------------------------------------------------

SPEECH_LINES = (
    "okay is it recording now",
    "this is my new song, hope you like it",
    "one two three four",
    "can you hear me at the back",
    "thanks for watching, please subscribe",
    "wait, let me tune it first",
    "we practised this all week",
    "happy birthday grandma",
    "turn it up a little",
    "and now the chorus",
    "that was fun, one more time",
    "hello everybody, welcome to the show",
)
SPEECH_VOICES = ("en", "en-us", "en-gb-x-rp", "es", "fr", "de", "it")


def speech_pool(directory: Path) -> list[np.ndarray]:
    """Background speech synthesized with espeak-ng: every line in a few voices, at AUDIO_RATE."""
    directory.mkdir(parents=True, exist_ok=True)
    pool = []
    for i, line in enumerate(SPEECH_LINES):
        voice = SPEECH_VOICES[i % len(SPEECH_VOICES)]
        path = directory / f"speech{i:02d}.wav"
        if not path.exists():
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(140 + 10 * (i % 5)), "-w", str(path), line],
                check=True,
                capture_output=True,
            )
        pool.append(decode_audio(path, AUDIO_RATE))
    return pool


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) noise with unit RMS."""
    white = rng.standard_normal(n)
    if colour != "white":
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
        spectrum /= f ** (0.5 if colour == "pink" else 1.0)
        white = np.fft.irfft(spectrum, n)
    return (white / (np.sqrt(np.mean(white**2)) + 1e-12)).astype(np.float32)


def rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(signal.astype(np.float64) ** 2)) + 1e-12)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + noise scaled so that rms(signal) / rms(noise) is snr_db decibels."""
    noise = fit_length(noise, len(signal))
    return signal + noise * (rms(signal) / rms(noise)) / (10 ** (snr_db / 20))


def room_reverb(
    signal: np.ndarray, rt60: float, wet: float, rng: np.random.Generator, rate: int = AUDIO_RATE
) -> np.ndarray:
    """Convolution with a synthetic room response: exponentially decaying noise (RT60 in seconds)."""
    n = round(rt60 * rate)
    t = np.arange(n) / rate
    response = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    response[: round(0.005 * rate)] = 0  # direct sound is the dry path
    response /= np.sqrt(np.sum(response**2)) + 1e-12
    spectrum_len = 1 << int(np.ceil(np.log2(len(signal) + n)))
    tail = np.fft.irfft(np.fft.rfft(signal, spectrum_len) * np.fft.rfft(response, spectrum_len), spectrum_len)
    return ((1 - wet) * signal + wet * tail[: len(signal)]).astype(np.float32)


def phone_band(signal: np.ndarray, low_hz: float = 300.0, high_hz: float = 3400.0) -> np.ndarray:
    """The band of a cheap phone microphone: second-order high- and low-pass, applied twice."""
    x = torch.from_numpy(signal.astype(np.float32))
    for _ in range(2):
        x = AF.highpass_biquad(x, AUDIO_RATE, low_hz)
        x = AF.lowpass_biquad(x, AUDIO_RATE, high_hz)
    return x.numpy()


def hard_clip(signal: np.ndarray, drive: float) -> np.ndarray:
    """An overloaded input stage: gain, then clipping at full scale."""
    return np.clip(signal * drive, -1.0, 1.0).astype(np.float32)


def set_level(signal: np.ndarray, rms_dbfs: float) -> np.ndarray:
    """Scales to an RMS level in dBFS, then keeps peaks under full scale."""
    scaled = signal * (10 ** (rms_dbfs / 20) / rms(signal))
    peak = float(np.max(np.abs(scaled))) if len(scaled) else 0.0
    return (scaled / peak * 0.99 if peak > 0.99 else scaled).astype(np.float32)
