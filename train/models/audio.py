"""The seeds' audio networks over log-mel spectrograms.

Every network maps a log-mel batch (batch, n_mels, frames) to logits (batch, classes) and exposes
`embed()`, the penultimate features the late-fusion network stacks. Each is rebuilt from an
`AudioDims`, which a checkpoint stores beside its weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

ARCHITECTURES = ("han", "choi", "xception", "attention")


@dataclass(frozen=True)
class AudioDims:
    """Everything needed to rebuild an audio network; stored in the model bundle."""

    arch: str
    n_classes: int
    n_mels: int
    channels: tuple[int, ...]  # conv widths, per block
    embedding_dim: int  # size of embed()'s output
    dropout: float = 0.25
    middle_blocks: int = 2  # xception: separable blocks in the middle flow
    first_kernel: tuple[int, int] = (48, 3)  # xception: (mel bands, frames) of the first filters
    patch_frames: int = 96  # attention: frames per embedding patch (~1 s)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> AudioDims:
        raw = dict(raw)
        for key in ("channels", "first_kernel"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)


def default_dims(arch: str, n_classes: int, n_mels: int) -> AudioDims:
    """The seeds' sizes: Han ~1.5M parameters, Choi ~2.4M, Xception ~9.6M (poster, seed 000).

    Ours: Han 1.45M, Choi 2.15M, Xception 9.0M, attention 0.3M (a small VGGish-like patch CNN).
    """
    if arch == "han":
        return AudioDims(arch, n_classes, n_mels, channels=(32, 64, 128, 256), embedding_dim=1024)
    if arch == "choi":
        return AudioDims(arch, n_classes, n_mels, channels=(64, 128, 256, 256, 512), embedding_dim=512, dropout=0.3)
    if arch == "xception":
        return AudioDims(
            arch, n_classes, n_mels, channels=(32, 64, 128, 256, 768, 1024, 1536), embedding_dim=1536, dropout=0.3
        )
    if arch == "attention":
        return AudioDims(arch, n_classes, n_mels, channels=(32, 64, 128, 128), embedding_dim=128, dropout=0.2)
    raise ValueError(f"unknown audio architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")


class AudioNet(nn.Module):
    """Common shape of the audio networks: per-band input normalisation, embed(), a linear classifier."""

    def __init__(self, dims: AudioDims) -> None:
        super().__init__()
        self.dims = dims
        # Learned per-mel-band standardisation: log-mel levels differ by tens of dB across bands.
        self.input_norm = nn.BatchNorm1d(dims.n_mels)
        self.classifier = nn.Linear(dims.embedding_dim, dims.n_classes)

    def init_weights(self) -> None:
        """He initialisation of convolutions: PyTorch's default shrinks activations layer by layer, which stalls the
        unnormalised Han network at the start of training. Linear layers keep small outputs."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.33, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch, embedding_dim)."""
        raise NotImplementedError

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(logmel))


class Han(AudioNet):
    """Han, Kim and Lee 2016: 8 conv layers of 3x3 (LeakyReLU), max-pooling and dropout after every
    second; global max pooling; one fully connected hidden layer; linear output."""

    def __init__(self, dims: AudioDims) -> None:
        super().__init__(dims)
        layers: list[nn.Module] = []
        c_in = 1
        for i, c_out in enumerate(dims.channels):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.LeakyReLU(0.33),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.LeakyReLU(0.33),
            ]
            if i < len(dims.channels) - 1:
                layers.append(nn.MaxPool2d(3, ceil_mode=True))
            layers.append(nn.Dropout(dims.dropout))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.hidden = nn.Sequential(nn.Linear(c_in, dims.embedding_dim), nn.LeakyReLU(0.33), nn.Dropout(0.5))

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_norm(logmel).unsqueeze(1))
        return self.hidden(torch.amax(x, dim=(2, 3)))


class Choi(AudioNet):
    """Choi, Fazekas and Sandler 2016 (fully convolutional tagger) with a softmax head: 3x3 convs with
    batch normalisation and ELU, max-pooling (2,4),(2,4),(2,4),(3,5),(4,4); global max over what is
    left, so the same weights take a 29 s central crop (CC) or 3 s uniform crops (UC)."""

    POOLS = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))

    def __init__(self, dims: AudioDims) -> None:
        super().__init__(dims)
        layers: list[nn.Module] = []
        c_in = 1
        for c_out, pool in zip(dims.channels, self.POOLS):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ELU(),
                nn.MaxPool2d(pool, ceil_mode=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dims.dropout)

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_norm(logmel).unsqueeze(1))
        return self.dropout(torch.amax(x, dim=(2, 3)))


class SeparableConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class XceptionBlock(nn.Module):
    """Separable convolutions with a residual connection; optional 3x3/2 max-pool (Chollet 2017)."""

    def __init__(self, c_in: int, c_out: int, n_convs: int, pool: bool) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        for i in range(n_convs):
            convs += [nn.ReLU(), SeparableConv(c_in if i == 0 else c_out, c_out)]
        if pool:
            convs.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.body = nn.Sequential(*convs)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2 if pool else 1, bias=False), nn.BatchNorm2d(c_out))
            if pool or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class XceptionAudio(AudioNet):
    """Xception for audio (seed 000/001): rectangular first filters spanning 48 mel bands x 3 frames
    for timbre, separable convolutions with 768 filters in the middle flow."""

    def __init__(self, dims: AudioDims) -> None:
        super().__init__(dims)
        c = dims.channels  # (stem1, stem2, entry..., middle, exit1, exit2)
        kernel = (min(dims.first_kernel[0], dims.n_mels), dims.first_kernel[1])
        self.stem = nn.Sequential(
            nn.Conv2d(1, c[0], kernel, padding=(0, kernel[1] // 2), bias=False),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(),
            nn.Conv2d(c[0], c[1], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c[1]),
            nn.ReLU(),
        )
        entry = [XceptionBlock(c_in, c_out, 2, pool=True) for c_in, c_out in zip(c[1:4], c[2:5])]
        middle = [XceptionBlock(c[4], c[4], 3, pool=False) for _ in range(dims.middle_blocks)]
        exit_flow = [XceptionBlock(c[4], c[5], 2, pool=True), SeparableConv(c[5], c[6]), nn.ReLU()]
        self.blocks = nn.Sequential(*entry, *middle, *exit_flow)
        self.dropout = nn.Dropout(dims.dropout)

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.input_norm(logmel).unsqueeze(1)))
        return self.dropout(x.mean(dim=(2, 3)))


class AttentionAIR(AudioNet):
    """Gururani, Sharma and Lerch 2019, as studied in seed 003: an embedding CNN per ~1 s patch, three
    1x1 convolutions of 128 with group normalisation and a residual connection, and an attention
    module (class activity and attention, both sigmoid; attention normalised over time; activity
    gated by attention and summed over time; hard-tanh into [0, 1]).

    forward() returns probabilities in [0, 1] per class (multi-label, trained with binary
    cross-entropy), not logits. `embed_patches()` is the swappable representation of seed 003.
    """

    def __init__(self, dims: AudioDims) -> None:
        super().__init__(dims)
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in dims.channels:  # a small VGGish: conv-relu-pool blocks
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c_out
        self.patch_cnn = nn.Sequential(*layers)
        self.patch_fc = nn.Sequential(nn.Linear(c_in, dims.embedding_dim), nn.ReLU())
        width = dims.embedding_dim
        self.post = nn.Sequential(
            *[m for _ in range(3) for m in (nn.Conv2d(width, width, 1), nn.ReLU())], nn.GroupNorm(8, width)
        )
        self.activity = nn.Conv2d(width, dims.n_classes, 1)
        self.attention = nn.Conv2d(width, dims.n_classes, 1)
        self.dropout = nn.Dropout(dims.dropout)

    def patches(self, logmel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch * n_patches, n_mels, patch_frames), zero-padding the last patch."""
        batch, n_mels, frames = logmel.shape
        p = self.dims.patch_frames
        n_patches = max(1, -(-frames // p))
        padded = nn.functional.pad(logmel, (0, n_patches * p - frames))
        return padded.reshape(batch, n_mels, n_patches, p).permute(0, 2, 1, 3).reshape(batch * n_patches, n_mels, p)

    def embed_patches(self, logmel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch, embedding_dim, n_patches, 1): one embedding per patch."""
        batch = logmel.shape[0]
        x = self.input_norm(logmel)
        patches = self.patches(x).unsqueeze(1)
        e = self.patch_fc(torch.amax(self.patch_cnn(patches), dim=(2, 3)))
        return e.reshape(batch, -1, e.shape[-1]).permute(0, 2, 1).unsqueeze(-1)

    def _attend(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed_patches(logmel)
        h = self.post(e) + e  # residual connection around the 1x1 block
        return h, self.dropout(h)

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        h, _ = self._attend(logmel)
        return h.mean(dim=(2, 3))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        _, h = self._attend(logmel)
        activity = torch.sigmoid(self.activity(h))  # (batch, classes, n_patches, 1)
        attention = torch.sigmoid(self.attention(h))
        attention = attention / attention.sum(dim=2, keepdim=True).clamp_min(1e-6)
        return nn.functional.hardtanh((activity * attention).sum(dim=(2, 3)), 0.0, 1.0)


_CLASSES = {"han": Han, "choi": Choi, "xception": XceptionAudio, "attention": AttentionAIR}


def build_audio_model(dims: AudioDims) -> AudioNet:
    if dims.arch not in _CLASSES:
        raise ValueError(f"unknown audio architecture {dims.arch!r}; known: {', '.join(ARCHITECTURES)}")
    model = _CLASSES[dims.arch](dims)
    model.init_weights()
    return model


def outputs_probabilities(dims: AudioDims) -> bool:
    """True when forward() already gives probabilities (the attention model) rather than logits."""
    return dims.arch == "attention"


__all__ = ["ARCHITECTURES", "AudioDims", "AudioNet", "build_audio_model", "default_dims", "outputs_probabilities"]
