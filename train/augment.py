"""Waveform augmentation for audio training, aimed at timbre shift rather than noise alone.

The corpus renders every class from one or two sample sets, so a network learns those recordings'
colour, room and pitch range as much as the instrument. Field material (other sample sets, real
rooms, phone microphones) differs in exactly those ways. Each lever below changes one of them on the
fly, per training window, so no two epochs hear the same recording the same way:

- pitch: tape-speed resampling by up to +-3 semitones; pitch and formants move together, as with a
  differently sized instrument or another sample set's tuning.
- eq: a random smooth equaliser curve (tilt, a few broad peaks and dips, sometimes a band limit), the
  colour of another microphone, instrument body or sample set.
- room: a synthetic room response (exponentially decaying noise, RT60 0.1-1.0 s).
- dynamics: level from -45 to -10 dBFS and sometimes soft saturation (an overloaded phone input).
- mix: background (speech, babble, noise) under the music at 0-25 dB SNR; the label stays the music's.

Levers are named so that `streamrec train audio --augment` can switch each one off (the ablation rows of
docs/results.md). Background windows ("no instrument") go through the same channel levers (eq, room,
dynamics), so that the background output does not learn the channel instead of the content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrec.train.background import BackgroundSource
from streamrec.train.corpus import audio as A

LEVERS = ("pitch", "eq", "room", "dynamics", "mix")
MAX_SEMITONES = 3.0
# The most source samples one augmented window can need: pitch shifting reads faster than real time.
MAX_STRETCH = 2 ** (MAX_SEMITONES / 12)


def parse_levers(text: str) -> tuple[str, ...]:
    """ "all", "none" or a comma list of LEVERS (order does not matter); raises ValueError on unknown names."""
    text = text.strip().lower()
    if text == "all":
        return LEVERS
    if text in ("none", ""):
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from all, none, {', '.join(LEVERS)}")
    return tuple(n for n in LEVERS if n in names)


@dataclass(frozen=True)
class WaveAugment:
    """The chosen levers at one sample rate; `music` and `background` augment a (rows, samples) batch."""

    levers: tuple[str, ...]
    sample_rate: int
    probability: float = 0.8  # of each lever per window: some windows stay close to the corpus

    def source_samples(self, window: int) -> int:
        """How many samples to read per window so that pitch shifting can fill it."""
        return int(np.ceil(window * MAX_STRETCH)) if "pitch" in self.levers else window

    def music(
        self, raw: np.ndarray, window: int, rng: np.random.Generator, background: BackgroundSource | None
    ) -> np.ndarray:
        """raw: (rows, source_samples(window)) float32 music windows -> (rows, window) augmented."""
        out = self._pitch(raw, window, rng) if "pitch" in self.levers else raw[:, :window].copy()
        if "mix" in self.levers and background is not None:
            for row in np.flatnonzero(rng.random(len(out)) < self.probability * 0.6):
                if A.rms(out[row]) < 1e-5:
                    continue  # a silent stretch of the clip: mixing would make it a background window
                noise = background.window(window, rng)
                out[row] = A.mix_at_snr(out[row], noise, float(rng.uniform(0, 25)))
        return self._channel(out, rng)

    def background(self, windows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(rows, window) background windows through the same channel levers as the music."""
        return self._channel(windows.copy(), rng)

    def _channel(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if "eq" in self.levers:
            out = self._eq(out, rng)
        if "room" in self.levers:
            for row in np.flatnonzero(rng.random(len(out)) < self.probability * 0.6):
                rt60 = float(rng.uniform(0.1, 1.0))
                out[row] = A.room_reverb(out[row], rt60, float(rng.uniform(0.1, 0.6)), rng, self.sample_rate)
        if "dynamics" in self.levers:
            out = self._dynamics(out, rng)
        return out.astype(np.float32)

    def _pitch(self, raw: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((len(raw), window), np.float32)
        target = np.arange(window, dtype=np.float64)
        for row in range(len(raw)):
            shift = rng.uniform(-MAX_SEMITONES, MAX_SEMITONES) if rng.random() < self.probability else 0.0
            # Linear interpolation is enough: the front end keeps 64 mel bands, and aliasing at +-3
            # semitones stays above the top band's energy.
            out[row] = np.interp(target * 2 ** (shift / 12), np.arange(raw.shape[1]), raw[row])
        return out

    def _eq(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = out.shape[1]
        freqs = np.maximum(np.fft.rfftfreq(n, 1 / self.sample_rate), 20.0)
        octaves = np.log2(freqs / 1000.0)  # distance from 1 kHz in octaves
        gains_db = np.zeros((len(out), len(freqs)))
        for row in np.flatnonzero(rng.random(len(out)) < self.probability):
            curve = np.clip(rng.uniform(-4, 4) * octaves, -15, 15)  # tilt: dB per octave
            for _ in range(int(rng.integers(1, 4))):  # broad peaks and dips
                centre, width = rng.uniform(-3.3, 2.9), rng.uniform(0.3, 1.5)  # 100 Hz .. 7.5 kHz, octaves
                curve += rng.uniform(-10, 10) * np.exp(-0.5 * ((octaves - centre) / width) ** 2)
            if rng.random() < 0.3:  # a band limit: small speaker or cheap microphone
                low, high = rng.uniform(80, 500), rng.uniform(2500, 7000)
                curve -= 24 * (np.maximum(0, np.log2(low / freqs)) + np.maximum(0, np.log2(freqs / high)))
            gains_db[row] = curve
        spectrum = np.fft.rfft(out, axis=1) * 10 ** (gains_db / 20)
        return np.fft.irfft(spectrum, n, axis=1).astype(np.float32)

    def _dynamics(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for row in range(len(out)):
            if A.rms(out[row]) < 1e-5 or rng.random() >= self.probability:
                continue
            signal = A.set_level(out[row], float(rng.uniform(-45, -10)))
            if rng.random() < 0.25:  # an overloaded input stage, softly
                drive = float(rng.uniform(2, 8))
                signal = np.tanh(drive * signal) / drive
            out[row] = signal
        return out
