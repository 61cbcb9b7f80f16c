"""Windows of "no instrument": silence, room and electrical noise, and speech, which a live microphone
hears between pieces. Audio networks trained with a background class learn to say so.

Speech is half synthesized (espeak-ng, several voices) and half recorded (corpus.sources.SPEECH_RECORDINGS:
telephone-band prompts and full-band dialogues), when installed. Synthesized speech alone did not carry
over: the network took real speech for instruments (docs/results.md, field accuracy)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from streamrec.core.media import resample
from streamrec.train.corpus import audio as A
from streamrec.train.corpus.sources import LICENCES, SPEECH_RECORDINGS, cache_dir, recorded_speech


@functools.lru_cache(maxsize=2)
def _synthesized_speech(sample_rate: int) -> list[np.ndarray]:
    return [resample(s, A.AUDIO_RATE, sample_rate) for s in A.speech_pool(cache_dir() / "speech")]


@functools.cache
def _recorded_speech(path: Path, sample_rate: int) -> np.ndarray:
    """One recording at sample_rate, decoded when first drawn and then kept: there are a few thousand, and
    a short run (a test) draws a handful."""
    return resample(A.recording(path), A.AUDIO_RATE, sample_rate)


def background_sources() -> dict[str, str]:
    """The packages the "no instrument" windows are drawn from on this machine, with their licences: what a
    bundle's manifest records of them."""
    installed = [package for package, root, _ in SPEECH_RECORDINGS if root.is_dir()]
    return {package: LICENCES[package] for package in ("espeak-ng", *installed)}


class BackgroundSource:
    """Draws background windows at a network's sample rate."""

    # babble, claps, rain and rumble imitate crowds, applause, rain and traffic: real noise beds the first
    # bundle took for instruments (applause for banjo, a crowd for flute; docs/results.md, field accuracy).
    KINDS = ("silence", "noise", "speech", "speech+noise", "hum", "babble", "claps", "rain", "rumble")

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.speech = _synthesized_speech(sample_rate)
        self.recorded = recorded_speech()

    def window(self, n: int, rng: np.random.Generator) -> np.ndarray:
        kind = self.KINDS[int(rng.integers(len(self.KINDS)))]
        if kind == "silence":
            return (rng.standard_normal(n) * 10 ** (rng.uniform(-90, -60) / 20)).astype(np.float32)
        if kind in ("babble", "claps", "rain", "rumble"):
            signal = getattr(self, f"_{kind}")(n, rng)
        elif kind == "hum":
            t = np.arange(n) / self.sample_rate + rng.uniform(0, 1)
            mains = rng.choice([50.0, 60.0])
            hum = sum(np.sin(2 * np.pi * mains * h * t) / h for h in (1, 2, 3))
            signal = hum + 0.3 * A.coloured_noise(n, "pink", rng)
        else:
            signal = np.zeros(n, np.float32)
            if "speech" in kind:
                signal = self._speech_line(n, rng)
            if "noise" in kind:
                noise = A.coloured_noise(n, str(rng.choice(["white", "pink", "brown"])), rng)
                signal = signal + noise * (A.rms(signal) / 10 ** (rng.uniform(0, 20) / 20) if signal.any() else 1.0)
        return A.set_level(signal.astype(np.float32), float(rng.uniform(-50, -15)))

    def windows(self, count: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """(count, n) float32."""
        return np.stack([self.window(n, rng) for _ in range(count)]) if count else np.zeros((0, n), np.float32)

    def _speech_line(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.recorded and rng.random() < 0.5:
            line = _recorded_speech(self.recorded[int(rng.integers(len(self.recorded)))], self.sample_rate)
        else:
            line = self.speech[int(rng.integers(len(self.speech)))]
        start = int(rng.integers(0, max(1, len(line) - n)))
        return A.fit_length(line[start : start + n], n)

    def _babble(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Several voices at once, each at its own level: a room full of people talking."""
        voices = [self._speech_line(n, rng) for _ in range(int(rng.integers(3, 8)))]
        return sum(v / A.rms(v) * 10 ** (rng.uniform(-12, 0) / 20) for v in voices).astype(np.float32)

    def _claps(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Applause: many short band-passed noise bursts at random times, each decaying in ~10 ms."""
        out = np.zeros(n + self.sample_rate // 10, np.float32)
        burst_len = self.sample_rate // 25
        decay = np.exp(-np.arange(burst_len) / (rng.uniform(0.004, 0.015) * self.sample_rate))
        for start in rng.integers(0, n, size=int(rng.uniform(5, 60) * n / self.sample_rate)):
            out[start : start + burst_len] += rng.standard_normal(burst_len) * decay * rng.uniform(0.2, 1.0)
        return out[:n] + 0.05 * A.coloured_noise(n, "pink", rng)

    def _rain(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Rain or a forest: dense tiny clicks over a hiss, sometimes a bird-like chirp."""
        clicks = np.zeros(n, np.float32)
        clicks[rng.integers(0, n, size=int(rng.uniform(200, 2000) * n / self.sample_rate))] = rng.uniform(-1, 1)
        signal = np.convolve(clicks, np.exp(-np.arange(40) / 6.0), mode="same") + 0.3 * A.coloured_noise(
            n, "white", rng
        )
        if rng.random() < 0.4:
            t = np.arange(n) / self.sample_rate
            chirp = np.sin(2 * np.pi * (rng.uniform(2000, 5000) + 800 * np.sin(2 * np.pi * 9 * t)) * t)
            signal = signal + 0.3 * chirp * (np.sin(2 * np.pi * rng.uniform(0.5, 3) * t) > 0.6)
        return signal.astype(np.float32)

    def _rumble(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A train, an engine, traffic: brown noise with a slow swell and a low periodic thud."""
        t = np.arange(n) / self.sample_rate
        swell = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 6.3))
        thud = np.sin(2 * np.pi * rng.uniform(20, 90) * t) * (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0.8)
        return (A.coloured_noise(n, "brown", rng) * swell + 0.3 * thud + 0.1 * A.coloured_noise(n, "pink", rng)).astype(
            np.float32
        )
