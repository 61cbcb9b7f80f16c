"""Windows of "no instrument": silence, room and electrical noise, and speech, which a live microphone
hears between pieces. Audio networks trained with a background class learn to say so.

Speech is half synthesized (espeak-ng, several voices) and half recorded: the Asterisk prompts of Debian
asterisk-core-sounds-en-wav (a real speaker, telephone band), when installed. Synthesized speech alone did
not carry over: the network took real speech for instruments (docs/results.md, field accuracy)."""

from __future__ import annotations

import numpy as np

from streamrec.core.media import resample
from streamrec.train.corpus import audio as A
from streamrec.train.corpus.sources import cache_dir, recorded_speech


class BackgroundSource:
    """Draws background windows at a network's sample rate."""

    KINDS = ("silence", "noise", "speech", "speech+noise", "hum")

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.speech = [resample(s, A.AUDIO_RATE, sample_rate) for s in A.speech_pool(cache_dir() / "speech")]
        self.recorded = [resample(A.recording(p), A.AUDIO_RATE, sample_rate) for p in recorded_speech()]

    def window(self, n: int, rng: np.random.Generator) -> np.ndarray:
        kind = self.KINDS[int(rng.integers(len(self.KINDS)))]
        if kind == "silence":
            return (rng.standard_normal(n) * 10 ** (rng.uniform(-90, -60) / 20)).astype(np.float32)
        if kind == "hum":
            t = np.arange(n) / self.sample_rate + rng.uniform(0, 1)
            mains = rng.choice([50.0, 60.0])
            hum = sum(np.sin(2 * np.pi * mains * h * t) / h for h in (1, 2, 3))
            signal = hum + 0.3 * A.coloured_noise(n, "pink", rng)
        else:
            signal = np.zeros(n, np.float32)
            if "speech" in kind:
                pool = self.recorded if self.recorded and rng.random() < 0.5 else self.speech
                line = pool[int(rng.integers(len(pool)))]
                start = int(rng.integers(0, max(1, len(line) - n)))
                piece = line[start : start + n]
                signal[: len(piece)] = piece
            if "noise" in kind:
                noise = A.coloured_noise(n, str(rng.choice(["white", "pink", "brown"])), rng)
                signal = signal + noise * (A.rms(signal) / 10 ** (rng.uniform(0, 20) / 20) if signal.any() else 1.0)
        return A.set_level(signal.astype(np.float32), float(rng.uniform(-50, -15)))

    def windows(self, count: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """(count, n) float32."""
        return np.stack([self.window(n, rng) for _ in range(count)]) if count else np.zeros((0, n), np.float32)
