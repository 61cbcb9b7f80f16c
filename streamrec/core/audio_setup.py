"""How each audio network sees a clip: its front end, its window, and how windows are cropped.

Shared by training, evaluation and the runtime: the same crops, through the same LogMel module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from streamrec.core.features import LOGMEL_PRESETS, LogMel, LogMelConfig
from streamrec.core.models.audio import AudioNet, outputs_probabilities
from streamrec.core.scores import split_background

N_UNIFORM_CROPS = 10  # seed paper: 10 segments uniformly distributed over the clip, predictions averaged


@dataclass(frozen=True)
class AudioSetup:
    arch: str
    frontend: LogMelConfig  # window_seconds is the network's input length
    crop: str  # "uniform": N_UNIFORM_CROPS windows averaged; "central": one window from the middle
    n_crops: int = N_UNIFORM_CROPS
    # The network has one output more than the taxonomy: "no instrument" (silence, noise, speech),
    # learned from generated background windows, so a live stream can tell music from the rest.
    background: bool = False

    @property
    def name(self) -> str:
        crop = "uc" if self.crop == "uniform" else "cc"
        return f"{self.arch}-{crop}-{self.frontend.window_seconds:g}s-{self.frontend.n_mels}mel"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> AudioSetup:
        frontend = LogMelConfig(**raw["frontend"])
        return cls(
            raw["arch"], frontend, raw["crop"], raw.get("n_crops", N_UNIFORM_CROPS), raw.get("background", False)
        )


def make_setup(
    arch: str,
    crop: str | None = None,
    frontend: str | None = None,
    window_seconds: float | None = None,
    background: bool = False,
) -> AudioSetup:
    """The seeds' settings per architecture, overridable: Han 1 s windows (uniform crops); Choi and
    Xception 29.1 s central crop (cc) or 3 s uniform crops (uc, default); attention over 10 s of
    ~1 s patches on the real-time front end."""
    defaults = {
        "han": ("uniform", "han", 1.0),
        "choi": ("uniform", "choi", 3.0),
        "xception": ("uniform", "choi", 3.0),
        "attention": ("central", "realtime", 10.0),
    }
    if arch not in defaults:
        raise ValueError(f"unknown audio architecture {arch!r}; known: {', '.join(defaults)}")
    default_crop, default_frontend, default_window = defaults[arch]
    crop_name = {"cc": "central", "uc": "uniform", None: default_crop}.get(crop, crop)
    if crop_name not in ("central", "uniform"):
        raise ValueError(f"unknown crop strategy {crop!r}; use cc (central) or uc (uniform)")
    if crop == "cc" and window_seconds is None and arch in ("choi", "xception"):
        window_seconds = 29.1  # Choi et al.'s 96 x 1366 input
    config = LOGMEL_PRESETS[frontend or default_frontend]
    config = replace(config, window_seconds=window_seconds or default_window)
    if background and arch == "attention":
        raise ValueError("the attention model is multi-label: it needs no background class")
    return AudioSetup(arch, config, crop_name, N_UNIFORM_CROPS if crop_name == "uniform" else 1, background)


def crop_starts(n_samples: int, window: int, setup: AudioSetup) -> list[int]:
    """Start samples of the evaluation windows of a clip of n_samples."""
    if n_samples <= window:
        return [0]
    if setup.crop == "central":
        return [(n_samples - window) // 2]
    return [int(round(s)) for s in np.linspace(0, n_samples - window, setup.n_crops)]


def take_windows(audio: np.ndarray, starts: list[int], window: int) -> np.ndarray:
    """(len(starts), window) float32; a clip shorter than the window is zero-padded at the end."""
    out = np.zeros((len(starts), window), np.float32)
    for i, start in enumerate(starts):
        piece = audio[start : start + window]
        out[i, : len(piece)] = piece
    return out


def eval_window(setup: AudioSetup, n_samples: int) -> int:
    """Window length in samples for a clip: a central crop longer than the clip takes the whole clip."""
    window = setup.frontend.window_samples
    return min(window, n_samples) if setup.crop == "central" else window


@torch.no_grad()
def window_probabilities(model: AudioNet, logmel: LogMel, windows: np.ndarray) -> np.ndarray:
    """(n, outputs) per-window probabilities (softmax, or the attention model's own); with a background
    class its column is the last."""
    outputs = model(logmel(torch.from_numpy(windows)))
    return (outputs if outputs_probabilities(model.dims) else torch.softmax(outputs, dim=1)).numpy()


def instrument_probabilities(probabilities: np.ndarray, setup: AudioSetup) -> np.ndarray:
    """Drops a background column and renormalises: the distribution over the taxonomy's classes."""
    return split_background(probabilities, setup.background)[0]


def clip_probabilities(model: AudioNet, logmel: LogMel, setup: AudioSetup, audio: np.ndarray) -> np.ndarray:
    """(classes,) probabilities over the taxonomy for one clip: the mean over its evaluation windows."""
    window = eval_window(setup, len(audio))
    windows = take_windows(audio, crop_starts(len(audio), window, setup), window)
    return instrument_probabilities(window_probabilities(model, logmel, windows), setup).mean(axis=0)
