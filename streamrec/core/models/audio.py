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
# What the attention model attends over (seed 003): "joint", a small patch CNN trained with the head;
# "logmel", the log-mel frames themselves; "embedding", seed 003's VGGish-like embedding CNN per
# ~1 s patch, frozen (random, or pre-trained by streamrec.train.pretrain).
REPRESENTATIONS = ("joint", "logmel", "embedding")
# Seed 003's VGGish at a quarter of its widths (64..512 conv, 4096 FC) so it trains on a CPU; the
# 128-dimensional output is kept.
EMBEDDING_CHANNELS = (16, 32, 64, 64, 128, 128)
EMBEDDING_FC_WIDTHS = (512, 512)


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
    representation: str = "joint"  # attention: one of REPRESENTATIONS
    fc_widths: tuple[int, ...] = ()  # attention over "embedding": hidden fully connected widths

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> AudioDims:
        raw = dict(raw)
        for key in ("channels", "first_kernel", "fc_widths"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)


def default_dims(arch: str, n_classes: int, n_mels: int, representation: str = "joint") -> AudioDims:
    """The seeds' sizes: Han ~1.5M parameters, Choi ~2.4M, Xception ~9.6M (poster, seed 000).

    Ours: Han 1.45M, Choi 2.15M, Xception 9.0M, attention 0.3M (a small VGGish-like patch CNN), or
    attention over seed 003's embedding CNN (0.74M, frozen) or over the log-mel frames.
    """
    if representation != "joint" and arch != "attention":
        raise ValueError(f"only the attention model takes a representation other than 'joint', not {arch!r}")
    if representation not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {representation!r}; known: {', '.join(REPRESENTATIONS)}")
    if representation == "embedding":
        return AudioDims(
            arch,
            n_classes,
            n_mels,
            channels=EMBEDDING_CHANNELS,
            embedding_dim=128,
            dropout=0.2,
            representation=representation,
            fc_widths=EMBEDDING_FC_WIDTHS,
        )
    if representation == "logmel":
        return AudioDims(arch, n_classes, n_mels, channels=(), embedding_dim=128, dropout=0.2, representation="logmel")
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


class FeatureScaler(nn.Module):
    """A fixed per-feature affine map (x - offset) * scale, fitted on training data and saved with the
    weights but never trained: a frozen representation must not drift with the head."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    @torch.no_grad()
    def fit_standard(self, values: torch.Tensor) -> None:
        """Zero mean, unit variance per feature; values (n, n_features)."""
        self.offset.copy_(values.mean(dim=0))
        self.scale.copy_(1.0 / values.std(dim=0).clamp_min(1e-6))

    @torch.no_grad()
    def fit_range(self, values: torch.Tensor) -> None:
        """Training minimum to 0 and maximum to 1 per feature (seed 003's normalisation to [0, 1])."""
        low, high = values.amin(dim=0), values.amax(dim=0)
        spread = high - low
        self.offset.copy_(low)
        # A feature constant on the training data (a dead ReLU) carries nothing: it maps to 0.
        self.scale.copy_(torch.where(spread > 1e-6, 1.0 / spread.clamp_min(1e-6), torch.zeros_like(spread)))

    def forward(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[dim] = -1
        return (x - self.offset.view(shape)) * self.scale.view(shape)


class EmbeddingCNN(nn.Module):
    """Seed 003's embedding CNN (VGGish as the paper describes it): conv blocks of 3x3 convolution,
    ReLU and 2x2 max-pooling, no normalisation layers; the flattened maps go through fully connected
    layers with ReLU to a 128-dimensional embedding of one 96-frame (~1 s) log-mel patch.

    Its input standardisation (per mel band) is fixed, fitted on training data before pre-training,
    so the denoising corruptions act on unit-variance log-mel values and the targets stay put.
    """

    def __init__(
        self, n_mels: int, patch_frames: int, channels: tuple[int, ...], fc_widths: tuple[int, ...], out_dim: int
    ) -> None:
        super().__init__()
        self.n_mels, self.patch_frames, self.out_dim = n_mels, patch_frames, out_dim
        self.standardise = FeatureScaler(n_mels)
        layers: list[nn.Module] = []
        c_in, height, width = 1, n_mels, patch_frames
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            c_in, height, width = c_out, -(-height // 2), -(-width // 2)
        self.convs = nn.Sequential(*layers, nn.Flatten())
        dense: list[nn.Module] = []
        d_in = c_in * height * width
        for d_out in (*fc_widths, out_dim):
            dense += [nn.Linear(d_in, d_out), nn.ReLU()]
            d_in = d_out
        self.dense = nn.Sequential(*dense)

    def init_weights(self) -> None:
        """Uniform weights with He's scaling and zero biases. Seed 003 scales by Glorot's rule, but over
        nine ReLU layers without normalisation that shrinks the embedding ~100-fold, and denoising then
        stalls on the mean patch for longer than a CPU budget of minutes. (A random embedding is the same
        either way up to one factor, which its [0, 1] scaling removes: the biases are zero and ReLU and
        max-pooling commute with positive scaling.)"""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def encode(self, standardised: torch.Tensor) -> torch.Tensor:
        """(n, n_mels, patch_frames) of standardised log-mel -> (n, out_dim)."""
        return self.dense(self.convs(standardised.unsqueeze(1)))

    def forward(self, logmel_patches: torch.Tensor) -> torch.Tensor:
        return self.encode(self.standardise(logmel_patches))


class AttentionAIR(AudioNet):
    """Gururani, Sharma and Lerch 2019, as studied in seed 003: a representation per time step, three
    1x1 convolutions of 128 with group normalisation and a residual connection, and an attention
    module (class activity and attention, both sigmoid; attention normalised over time; activity
    gated by attention and summed over time; hard-tanh into [0, 1]).

    The representation (`dims.representation`, seed 003's subject) is a small patch CNN trained with
    the head ("joint"), the log-mel frames ("logmel"), or seed 003's embedding CNN per ~1 s patch
    ("embedding"); the last two are frozen and scaled to [0, 1] by `scaler`, fitted on training data.

    forward() returns probabilities in [0, 1] per class (multi-label, trained with binary
    cross-entropy), not logits.
    """

    def __init__(self, dims: AudioDims) -> None:
        super().__init__(dims)
        width = dims.embedding_dim
        self.embedding: EmbeddingCNN | None = None
        self.scaler: FeatureScaler | None = None
        if dims.representation == "joint":
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
            self.patch_fc = nn.Sequential(nn.Linear(c_in, width), nn.ReLU())
            features = width
        elif dims.representation == "embedding":
            self.embedding = EmbeddingCNN(dims.n_mels, dims.patch_frames, dims.channels, dims.fc_widths, width)
            features = width
        elif dims.representation == "logmel":
            features = dims.n_mels
        else:
            raise ValueError(f"unknown representation {dims.representation!r}; known: {', '.join(REPRESENTATIONS)}")
        if dims.representation != "joint":
            self.scaler = FeatureScaler(features)
        self.post = nn.Sequential(
            *[m for i in range(3) for m in (nn.Conv2d(features if i == 0 else width, width, 1), nn.ReLU())],
            nn.GroupNorm(8, width),
        )
        # The residual adds the representation itself; log-mel frames need a projection to the width.
        self.skip = nn.Identity() if features == width else nn.Conv2d(features, width, 1)
        self.activity = nn.Conv2d(width, dims.n_classes, 1)
        self.attention = nn.Conv2d(width, dims.n_classes, 1)
        self.dropout = nn.Dropout(dims.dropout)

    def init_weights(self) -> None:
        super().init_weights()
        if self.embedding is not None:
            self.embedding.init_weights()

    def frozen_modules(self) -> list[nn.Module]:
        """The modules that hold the representation fixed while the head trains (seed 003's second stage)."""
        return [m for m in (self.embedding, self.scaler) if m is not None]

    def patches(self, logmel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch * n_patches, n_mels, patch_frames), zero-padding the last patch."""
        batch, n_mels, frames = logmel.shape
        p = self.dims.patch_frames
        n_patches = max(1, -(-frames // p))
        padded = nn.functional.pad(logmel, (0, n_patches * p - frames))
        return padded.reshape(batch, n_mels, n_patches, p).permute(0, 2, 1, 3).reshape(batch * n_patches, n_mels, p)

    def raw_representation(self, logmel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch, features, steps, 1), before the [0, 1] scaling."""
        if self.dims.representation == "logmel":
            return logmel.unsqueeze(-1)
        batch = logmel.shape[0]
        if self.embedding is not None:
            e = self.embedding(self.patches(logmel))
        else:
            patches = self.patches(self.input_norm(logmel)).unsqueeze(1)
            e = self.patch_fc(torch.amax(self.patch_cnn(patches), dim=(2, 3)))
        return e.reshape(batch, -1, e.shape[-1]).permute(0, 2, 1).unsqueeze(-1)

    def embed_patches(self, logmel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch, features, steps, 1): the representation the head attends over."""
        e = self.raw_representation(logmel)
        return self.scaler(e) if self.scaler is not None else e

    def _hidden(self, representation: torch.Tensor) -> torch.Tensor:
        return self.post(representation) + self.skip(representation)  # residual connection around the 1x1 block

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        return self._hidden(self.embed_patches(logmel)).mean(dim=(2, 3))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.attend(self.embed_patches(logmel))

    def attend(self, representation: torch.Tensor) -> torch.Tensor:
        """The head alone: embed_patches()'s output -> probabilities. Over a frozen representation it
        trains on representations computed once, as seed 003's second stage does."""
        h = self.dropout(self._hidden(representation))
        activity = torch.sigmoid(self.activity(h))  # (batch, classes, steps, 1)
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


__all__ = [
    "ARCHITECTURES",
    "REPRESENTATIONS",
    "AttentionAIR",
    "AudioDims",
    "AudioNet",
    "EmbeddingCNN",
    "FeatureScaler",
    "build_audio_model",
    "default_dims",
    "outputs_probabilities",
]
