"""The one audio front end (log-mel) and the one frame preprocessing, shared by training and runtime.

Their parameters are frozen dataclasses stored in every model bundle's manifest, so a model is
always fed the features it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torchaudio

# Added to mel power before the log, so silence maps to a finite floor (log(1e-6) = -13.8).
LOG_OFFSET = 1e-6


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel spectrogram parameters. Frames per window = 1 + window_samples // hop_length."""

    sample_rate: int = 16000  # Hz
    n_fft: int = 512  # samples (32 ms at 16 kHz)
    hop_length: int = 160  # samples (10 ms at 16 kHz)
    n_mels: int = 64
    f_min: float = 20.0  # Hz
    f_max: float | None = None  # Hz; None = Nyquist
    window_seconds: float = 1.0  # duration of one model input

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def frames_per_window(self) -> int:
        return 1 + self.window_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)


# The seeds' settings, and the real-time default (short windows for low latency).
LOGMEL_PRESETS: dict[str, LogMelConfig] = {
    # Han et al. 2016: 22.05 kHz, STFT 1024/512, 128 mel bands, 1 s inputs of 128 x 43.
    "han": LogMelConfig(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=128, f_min=0.0, window_seconds=1.0),
    # Choi et al. 2016: 12 kHz, STFT 512/256, 96 mel bands, 29.1 s inputs of 96 x 1366.
    "choi": LogMelConfig(sample_rate=12000, n_fft=512, hop_length=256, n_mels=96, f_min=0.0, window_seconds=29.1),
    # streamrec's real-time default: 16 kHz, 32 ms / 10 ms STFT, 64 mel bands, 1 s windows of 64 x 101.
    "realtime": LogMelConfig(),
}


class LogMel(torch.nn.Module):
    """Waveform (batch, samples) float32 in [-1, 1] -> log-mel (batch, n_mels, frames)."""

    def __init__(self, config: LogMelConfig) -> None:
        super().__init__()
        self.config = config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
            power=2.0,
            center=True,
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(waveform) + LOG_OFFSET)


def logmel(waveform: np.ndarray, config: LogMelConfig) -> np.ndarray:
    """Convenience for one mono signal (samples,) -> (n_mels, frames) float32."""
    with torch.no_grad():
        return LogMel(config)(torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))[None])[0].numpy()


@dataclass(frozen=True)
class FrameConfig:
    """Frame preprocessing: resize the short side, then centre-crop a square (seed paper: 256 -> 224)."""

    fps: float = 1.0  # frames per second taken from video
    resize: int = 256  # pixels, short side
    crop: int = 224  # pixels, square side

    def to_dict(self) -> dict:
        return asdict(self)


def preprocess_frame(rgb: np.ndarray, config: FrameConfig) -> np.ndarray:
    """(height, width, 3) uint8 RGB -> (crop, crop, 3) uint8 RGB."""
    height, width = rgb.shape[:2]
    scale = config.resize / min(height, width)
    new_w, new_h = max(config.crop, round(width * scale)), max(config.crop, round(height * scale))
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (new_h - config.crop) // 2, (new_w - config.crop) // 2
    return np.ascontiguousarray(resized[top : top + config.crop, left : left + config.crop])


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(n, size, size, 3) uint8 RGB -> (n, 3, size, size) float32 in [0, 1], the frame networks' input."""
    return torch.from_numpy(writable_array(frames, np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)


def writable_array(array: np.ndarray, dtype: type) -> np.ndarray:
    """torch.from_numpy wants a writable, contiguous array; the runtime's items are read-only."""
    out = np.ascontiguousarray(array, dtype=dtype)
    return out if out.flags.writeable else out.copy()
