"""The tagger: musicnn (Pons & Serra, 2019), a music-tagging CNN trained on real recordings, with a linear probe
from its embedding to our classes. A bundle's optional "tagger" network; the runtime mixes its answer into the
audio modality (streamrec.core.scores.FusionRule.mix_audio), one update late, off the emission path
(streamrec.runtime.recognizer says how).

Our audio network learned its classes from two soundfonts; musicnn learned timbre from thousands of real songs
(MagnaTagATune), and a linear map over its embedding, fitted on the same corpus, carries that to instruments
training never played (docs/results.md, "musicnn's embedding"). streamrec.train.musicnn reads the weights from
the `musicnn` wheel's TensorFlow checkpoints; `streamrec train tagger` fits the probe and writes the bundle entry.

The network keeps the front end it was trained with, which is not ours (streamrec.core.features): 16 kHz, 512-point
FFT, hop 256, 96 Slaney mel bands, log10(10000 x + 1). Feeding it our log-mel would void its weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 16000
N_MELS = 96
HOP = 256
BN_EPS = 1e-3  # tf.layers.batch_normalization's default
FEATURES = 753  # front-end (561) and mid-end (3 x 64) features per frame
EMBEDDING_DIM = 2 * FEATURES  # their mean and max over time
# (conv, batch norm, time padding) of the front end's timbral and temporal filters and of the mid end, by their
# TensorFlow names; TF pads "same" kernels of even length one frame more after than before.
FRONT = (
    ("conv2d", "batch_normalization_1", (3, 3)),
    ("conv2d_1", "batch_normalization_2", (3, 3)),
    ("conv2d_2", "batch_normalization_3", (63, 64)),
    ("conv2d_3", "batch_normalization_4", (31, 32)),
    ("conv2d_4", "batch_normalization_5", (15, 16)),
)
MID = tuple((f"conv2d_{5 + i}", f"batch_normalization_{6 + i}", (3, 3)) for i in range(3))


@dataclass(frozen=True)
class TaggerSetup:
    """What the tagger is fed: windows of `window_samples` at 16 kHz (the audio network's windows)."""

    window_samples: int
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.sample_rate != SAMPLE_RATE or self.window_samples < HOP:
            raise ValueError(f"the tagger takes windows of at least {HOP} samples at {SAMPLE_RATE} Hz")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaggerSetup:
        return cls(int(d["window_samples"]), int(d.get("sample_rate", SAMPLE_RATE)))

    def to_dict(self) -> dict[str, int]:
        return {"window_samples": self.window_samples, "sample_rate": self.sample_rate}


def mel_frames(window_samples: int) -> int:
    """Frames of the tagger's front end for one window (centred STFT)."""
    return window_samples // HOP + 1


class MusicnnFrontend(nn.Module):
    """The log-mel musicnn was trained with (librosa's melspectrogram defaults): (batch, samples) at 16 kHz ->
    (batch, frames, 96)."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=512, hop_length=HOP, n_mels=N_MELS, f_min=0.0, f_max=SAMPLE_RATE / 2,
            power=2.0, center=True, pad_mode="constant", mel_scale="slaney", norm="slaney",
        )  # fmt: skip

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.log10(10000 * self.mel(waveform) + 1).transpose(1, 2)


class _BatchNorm(nn.Module):
    """TF's inference-mode batch normalisation over one axis, folded into a scale and a shift."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("shift", torch.zeros(channels))

    def load_tf(self, weights: Mapping[str, np.ndarray], name: str) -> None:
        scale = weights[f"{name}/gamma"] / np.sqrt(weights[f"{name}/moving_variance"] + BN_EPS)
        self.scale.copy_(torch.tensor(scale, dtype=torch.float32))
        self.shift.copy_(torch.tensor(weights[f"{name}/beta"] - weights[f"{name}/moving_mean"] * scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)


class _Conv(nn.Module):
    """TF conv2d + ReLU + batch norm, padded on the time axis only ("same" in time where the model asks)."""

    def __init__(self, kernel: Sequence[int], time_pad: tuple[int, int]) -> None:
        super().__init__()
        height, width, channels_in, channels_out = kernel  # TF's HWIO
        self.conv = nn.Conv2d(channels_in, channels_out, (height, width))
        self.bn = _BatchNorm(channels_out, 1)
        self.time_pad = time_pad

    def load_tf(self, weights: Mapping[str, np.ndarray], conv: str, bn: str) -> None:
        self.conv.weight.data.copy_(torch.tensor(weights[f"{conv}/kernel"]).permute(3, 2, 0, 1))  # -> OIHW
        self.conv.bias.data.copy_(torch.tensor(weights[f"{conv}/bias"]))
        self.bn.load_tf(weights, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(F.pad(x, (0, 0, *self.time_pad)))))


class Musicnn(nn.Module):
    """musicnn's front end (timbral and temporal filters), mid end (three dense-residual convolutions) and
    back end, in inference mode. forward(mel (batch, frames, 96)) -> (embedding (batch, 1506): mean and max over
    time of the front- and mid-end features; logits (batch, 50) of the checkpoint's tags).

    kernels: the shape of every "*/kernel" tensor of the checkpoint, by its TensorFlow name (they size the layers);
    from_tf() builds the network from a checkpoint's tensors."""

    def __init__(self, kernels: Mapping[str, Sequence[int]]) -> None:
        super().__init__()
        self.kernels = {name: list(shape) for name, shape in kernels.items()}
        self.input_bn = _BatchNorm(1, 1)  # one statistic over the whole spectrogram
        self.front = nn.ModuleList(_Conv(kernels[f"{conv}/kernel"], pad) for conv, _, pad in FRONT)
        self.mid = nn.ModuleList(_Conv(kernels[f"{conv}/kernel"], pad) for conv, _, pad in MID)
        self.pool_bn = _BatchNorm(EMBEDDING_DIM, 1)
        self.dense = nn.Linear(*kernels["dense/kernel"])
        self.dense_bn = _BatchNorm(kernels["dense/kernel"][1], 1)
        self.tags = nn.Linear(*kernels["dense_1/kernel"])

    @classmethod
    def from_tf(cls, weights: Mapping[str, np.ndarray]) -> Musicnn:
        net = cls({name: list(w.shape) for name, w in weights.items() if name.endswith("/kernel")})
        with torch.no_grad():
            net.input_bn.load_tf(weights, "batch_normalization")
            for layer, (conv, bn, _) in zip([*net.front, *net.mid], FRONT + MID):
                layer.load_tf(weights, conv, bn)
            net.pool_bn.load_tf(weights, "batch_normalization_9")
            for linear, name in ((net.dense, "dense"), (net.tags, "dense_1")):
                linear.weight.copy_(torch.tensor(weights[f"{name}/kernel"]).T)
                linear.bias.copy_(torch.tensor(weights[f"{name}/bias"]))
            net.dense_bn.load_tf(weights, "batch_normalization_10")
        return net.eval()

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.input_bn(mel.unsqueeze(1))  # (batch, 1, frames, 96)
        front = torch.cat([conv(x).amax(dim=3) for conv in self.front], 1)  # (batch, 561, frames)
        features, previous = [front], None
        for conv in self.mid:  # each sees the previous layer as a one-channel image (features x frames)
            out = conv((front if previous is None else previous).unsqueeze(1).transpose(2, 3)).squeeze(3)
            previous = out if previous is None else out + previous
            features.append(previous)
        mid = torch.cat(features, 1)  # (batch, 753, frames)
        mean, peak = mid.mean(dim=2), mid.amax(dim=2)
        # TF flattens (753, 2) [max, mean] pairs: interleaved
        pooled = self.pool_bn(torch.stack([peak, mean], dim=2).flatten(1))
        return torch.cat([mean, peak], 1), self.tags(self.dense_bn(F.relu(self.dense(pooled))))


@dataclass(frozen=True)
class TaggerDims:
    """What rebuilds a tagger: the musicnn checkpoint it came from, its kernel shapes, and the probe's classes."""

    n_classes: int
    kernels: dict[str, list[int]] = field(default_factory=dict)
    source: str = "MTT_musicnn"  # the musicnn checkpoint (streamrec.train.musicnn.MODELS)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaggerDims:
        return cls(int(d["n_classes"]), {k: list(v) for k, v in d["kernels"].items()}, str(d.get("source", "")))

    def to_dict(self) -> dict[str, Any]:
        return {"n_classes": self.n_classes, "kernels": self.kernels, "source": self.source}


class Tagger(nn.Module):
    """mel (batch, frames, 96) -> logits (batch, classes): musicnn's embedding, standardised, through a linear probe."""

    def __init__(self, dims: TaggerDims) -> None:
        super().__init__()
        self.dims = dims
        self.musicnn = Musicnn(dims.kernels)
        self.register_buffer("mean", torch.zeros(EMBEDDING_DIM))
        self.register_buffer("std", torch.ones(EMBEDDING_DIM))
        self.probe = nn.Linear(EMBEDDING_DIM, dims.n_classes)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """The standardised embedding the probe reads."""
        return (self.musicnn(mel)[0] - self.mean) / self.std

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.probe(self.embed(mel))
