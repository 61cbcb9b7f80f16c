"""musicnn (Pons & Serra, 2019): music-tagging CNNs trained on real recordings (MagnaTagATune, the Million Song
Dataset), whose TF1 checkpoints ship inside the PyPI wheel `musicnn` (ISC licence). This module reads those
checkpoints without TensorFlow and runs the network in torch, so its knowledge of real instruments can be
measured against ours (scripts/musicnn_probe.py; docs/results.md, "musicnn's embedding").

The network keeps the front end it was trained with, which is not ours (streamrec.core.features): 16 kHz, 512-point
FFT, hop 256, 96 Slaney mel bands, log10(10000 x + 1). Feeding it our log-mel would void its weights.
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from streamrec.core.errors import UserError

MODELS = ("MTT_musicnn", "MSD_musicnn")  # the wheel's musicnn checkpoints (MagnaTagATune, Million Song Dataset)
SAMPLE_RATE = 16000
N_MELS = 96
HOP = 256
BN_EPS = 1e-3  # tf.layers.batch_normalization's default
EMBEDDING_DIM = 1506  # mean and max over time of the 753 front-end and mid-end features
# tensorflow/core/framework/types.proto: the dtypes a checkpoint of this kind holds
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}
_TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB table footer


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _block(table: bytes, handle: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Key/value pairs of one LevelDB table block (prefix-compressed keys, then the restart array)."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if table[offset + size] != 0:  # the block trailer's compression byte: TF writes its index uncompressed
        raise ValueError("compressed checkpoint index blocks are not supported")
    block = table[offset : offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end, pos, key = len(block) - 4 * (restarts + 1), 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _proto_fields(message: bytes) -> dict[int, list[int | bytes]]:
    """Protocol-buffer fields by number: varints as int, everything else as bytes."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        wire = tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = message[pos : pos + width], pos + width
        else:
            raise ValueError(f"unsupported protocol-buffer wire type {wire}")
        fields.setdefault(tag >> 3, []).append(value)
    return fields


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a single-shard TensorFlow checkpoint (PREFIX.index, PREFIX.data-00000-of-00001) by name.

    The index is a LevelDB table from tensor name to a BundleEntryProto (dtype 1, shape 2, offset 4, size 5);
    the data file holds the raw little-endian tensors."""
    index = Path(f"{prefix}.index").read_bytes()
    data = Path(f"{prefix}.data-00000-of-00001").read_bytes()
    footer = index[-48:]
    if len(index) < 48 or struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
        raise ValueError(f"{prefix}.index is not a TensorFlow checkpoint index")
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # skip the metaindex handle
    tensors: dict[str, np.ndarray] = {}
    for _, handle in _block(index, footer[pos:]):
        for name, entry in _block(index, handle):
            if not name:  # the bundle's header
                continue
            fields = _proto_fields(entry)
            dtype = np.dtype(_DTYPES[int(fields.get(1, [0])[0])])
            dims = _proto_fields(bytes(fields[2][0])).get(2, []) if 2 in fields else []
            shape = [int(_proto_fields(bytes(d)).get(1, [0])[0]) for d in dims]
            offset, size = int(fields.get(4, [0])[0]), int(fields.get(5, [0])[0])
            tensors[name.decode()] = np.frombuffer(data, dtype, size // dtype.itemsize, offset).reshape(shape).copy()
    return tensors


def checkpoint_prefix(model: str = "MTT_musicnn") -> str:
    """The prefix of `model`'s checkpoint in the installed `musicnn` wheel, found without importing the package
    (which would import TensorFlow). Its files are named ".index" and ".data-..." inside the model's folder, so
    the prefix ends with the folder's separator."""
    if model not in MODELS:
        raise UserError(f"unknown musicnn model {model!r}; choose from {', '.join(MODELS)}")
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the musicnn package is not installed (scripts/install.sh installs it)")
    return f"{Path(next(iter(spec.submodule_search_locations))) / model}/"


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
    """TF's inference-mode batch normalisation over one axis, with the checkpoint's statistics."""

    def __init__(self, weights: dict[str, np.ndarray], name: str, dim: int) -> None:
        super().__init__()
        self.dim = dim
        inv = 1.0 / np.sqrt(weights[f"{name}/moving_variance"] + BN_EPS)
        scale = weights[f"{name}/gamma"] * inv
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        shift = weights[f"{name}/beta"] - weights[f"{name}/moving_mean"] * scale
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)


class _Conv(nn.Module):
    """TF conv2d + ReLU + batch norm, padded on the time axis only ("same" in time where the model asks)."""

    def __init__(self, weights: dict[str, np.ndarray], conv: str, bn: str, time_pad: tuple[int, int]) -> None:
        super().__init__()
        kernel = torch.tensor(weights[f"{conv}/kernel"]).permute(3, 2, 0, 1)  # TF HWIO -> torch OIHW
        self.conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[2:]))
        self.conv.weight.data.copy_(kernel)
        self.conv.bias.data.copy_(torch.tensor(weights[f"{conv}/bias"]))
        self.bn = _BatchNorm(weights, bn, 1)
        self.time_pad = time_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(F.pad(x, (0, 0, *self.time_pad)))))


class Musicnn(nn.Module):
    """musicnn's front end (timbral and temporal filters), mid end (three dense-residual convolutions) and
    back end, in inference mode. forward(mel (batch, frames, 96)) -> (embedding (batch, 1506): mean and max over
    time of the front- and mid-end features; logits (batch, 50) of the checkpoint's tags)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.input_bn = _BatchNorm(weights, "batch_normalization", 1)
        # TF pads "same" kernels of even length one frame more after than before
        self.front = nn.ModuleList(
            _Conv(weights, f"conv2d{suffix}", f"batch_normalization_{i + 1}", pad)
            for i, (suffix, pad) in enumerate(
                [("", (3, 3)), ("_1", (3, 3)), ("_2", (63, 64)), ("_3", (31, 32)), ("_4", (15, 16))]
            )
        )
        self.mid = nn.ModuleList(
            _Conv(weights, f"conv2d_{5 + i}", f"batch_normalization_{6 + i}", (3, 3)) for i in range(3)
        )
        self.pool_bn = _BatchNorm(weights, "batch_normalization_9", 1)
        self.dense = nn.Linear(*weights["dense/kernel"].shape)
        self.dense.weight.data.copy_(torch.tensor(weights["dense/kernel"]).T)
        self.dense.bias.data.copy_(torch.tensor(weights["dense/bias"]))
        self.dense_bn = _BatchNorm(weights, "batch_normalization_10", 1)
        self.tags = nn.Linear(*weights["dense_1/kernel"].shape)
        self.tags.weight.data.copy_(torch.tensor(weights["dense_1/kernel"]).T)
        self.tags.bias.data.copy_(torch.tensor(weights["dense_1/bias"]))

    @classmethod
    def load(cls, model: str = "MTT_musicnn") -> Musicnn:
        return cls(read_tf_checkpoint(checkpoint_prefix(model))).eval()

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
