"""Audio training data shared by the audio network's training and seed 003's pre-training: the clips
with audio, class-balanced sampling, random windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamrec.core.dataset import Clip, DecodeSpec, dataset_classes, load_dataset
from streamrec.train import distributed


def audio_clips(data: Path, splits: str, sample_rate: int, workers: int) -> tuple[list[Clip], tuple[str, ...], list]:
    """The clips that have audio, decoded at the network's rate (frames are not decoded). Under torchrun the
    first process of each host decodes into the decode cache and the others read from it."""
    spec = DecodeSpec(sample_rate=sample_rate, video=False)
    with distributed.local_main_first():
        loaded = load_dataset(
            data,
            split=splits,
            spec=spec,
            classes=dataset_classes(data),
            workers=workers,
            progress=distributed.is_main(),
        )
    return [c for c in loaded.clips if c.audio is not None], loaded.classes, loaded.skipped


def balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n clip indices drawn so that every class is equally likely (class-balanced sampling)."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return rng.choice(len(labels), size=n, p=weights / weights.sum())


def random_windows(clips: list[Clip], indices: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """(len(indices), window) float32: one random window from each chosen clip, zero-padded if short."""
    out = np.zeros((len(indices), window), np.float32)
    for row, i in enumerate(indices):
        audio = clips[i].audio
        start = int(rng.integers(0, max(1, len(audio) - window + 1)))
        piece = audio[start : start + window]
        out[row, : len(piece)] = piece
    return out
