"""Seed 003's first training stage: pre-training the embedding CNN on a task other than the attention
model's, then freezing it as the representation the attention model attends over.

Objectives (Taenzer et al., section 4.1), all on ~1 s log-mel patches of the training split:
- "gaussian": denoising from additive Gaussian noise (std 0.1), "Den +";
- "bernoulli": denoising from multiplicative Bernoulli noise (half the bins dropped), "Den ⊙";
- "classification": the instrument label of the patch's clip (a discriminative objective, as VGGish's
  own pre-training on Audio Set is, but on this corpus).
The denoising decoder is the paper's: four transposed 1D convolutions that grow the embedding back to
96 frames of every mel band. The corruptions act on standardised log-mel (see EmbeddingCNN), and the
decoder reconstructs the clean standardised patch.

`python -m streamrec.train.seed003` runs the study; `freeze_representation` is what `train_audio` calls for an
attention model over "logmel" or "embedding".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamrec.core.audio_setup import AudioSetup, crop_starts, eval_window, take_windows
from streamrec.core.dataset import Clip, encode_targets
from streamrec.core.errors import UserError
from streamrec.core.features import LOGMEL_PRESETS, LogMel, LogMelConfig
from streamrec.core.models.audio import EMBEDDING_CHANNELS, EMBEDDING_FC_WIDTHS, AttentionAIR, EmbeddingCNN
from streamrec.train.audio_data import audio_clips, balanced_indices, random_windows
from streamrec.train.loop import FitOptions, fit
from streamrec.train.metrics import classification_report

log = logging.getLogger(__name__)

OBJECTIVES = ("gaussian", "bernoulli", "classification")
PATCH_FRAMES = 96  # VGGish's 0.96 s patch: 96 frames of 10 ms
GAUSSIAN_STD = 0.1  # seed 003: zero-mean Gaussian, standard deviation 0.1
BERNOULLI_DROP_RATE = 0.5  # seed 003: Bernoulli with p = 0.5
SCALER_CLIPS = 256  # training clips that fit a frozen representation's [0, 1] scaling


def gaussian_noise(
    x: torch.Tensor, std: float = GAUSSIAN_STD, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Additive corruption: x + N(0, std^2), element-wise."""
    return x + std * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def bernoulli_mask(
    x: torch.Tensor, drop_rate: float = BERNOULLI_DROP_RATE, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Multiplicative corruption: each element kept with probability 1 - drop_rate, else set to 0 (the
    band's mean level, on standardised log-mel)."""
    keep = torch.rand(x.shape, generator=generator) >= drop_rate
    return x * keep.to(x.dtype)


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {"gaussian": gaussian_noise, "bernoulli": bernoulli_mask}


class Decoder(nn.Module):
    """Seed 003's decoder: transposed 1D convolutions without padding, {128, 64, 64, n_mels} kernels of
    lengths {10, 21, 31, 37}, leaky ReLU of slopes {0.1, 0.25, 0.5} then linear. From one time step (the
    embedding as channels) they grow to 1 + 9 + 20 + 30 + 36 = 96 frames: one patch."""

    KERNELS = (10, 21, 31, 37)
    WIDTHS = (128, 64, 64)
    SLOPES = (0.1, 0.25, 0.5)

    def __init__(self, embedding_dim: int, n_mels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = embedding_dim
        for c_out, kernel, slope in zip((*self.WIDTHS, n_mels), self.KERNELS, (*self.SLOPES, None)):
            layers.append(nn.ConvTranspose1d(c_in, c_out, kernel))
            if slope is not None:
                layers.append(nn.LeakyReLU(slope))
            c_in = c_out
        self.layers = nn.Sequential(*layers)

    @classmethod
    def output_frames(cls) -> int:
        return 1 + sum(k - 1 for k in cls.KERNELS)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """(n, embedding_dim) -> (n, n_mels, 96)."""
        return self.layers(embedding.unsqueeze(-1))


class DenoisingAutoencoder(nn.Module):
    """Corrupts a standardised patch, embeds it with the encoder and decodes the embedding."""

    def __init__(self, encoder: EmbeddingCNN, corruption: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        if encoder.patch_frames != Decoder.output_frames():
            raise ValueError(f"the decoder makes {Decoder.output_frames()} frames, not {encoder.patch_frames}")
        self.encoder = encoder
        self.decoder = Decoder(encoder.out_dim, encoder.n_mels)
        self.corruption = corruption

    def forward(self, standardised: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.decoder(self.encoder.encode(self.corruption(standardised, generator=generator)))


class PatchClassifier(nn.Module):
    """The encoder with a linear softmax layer on its embedding: the discriminative pre-training."""

    def __init__(self, encoder: EmbeddingCNN, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.out_dim, n_classes)

    def forward(self, logmel_patches: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(logmel_patches))


@dataclass(frozen=True)
class PretrainOptions:
    data: Path
    out: Path  # the embedding checkpoint (.pt) to write; a .json summary goes beside it
    objective: str
    # Seed 003: Adam at 1e-4, batch 64, patience 5, at most 50 epochs (see docs/results.md on the rate).
    fit: FitOptions = FitOptions(max_epochs=50, patience=5, learning_rate=1e-4)
    batch_size: int = 64
    patches_per_clip: int = 4  # random training patches drawn per clip and epoch
    val_patches_per_clip: int = 3  # fixed validation patches, evenly spread over each clip
    workers: int = 2


def new_embedding_cnn(n_mels: int) -> EmbeddingCNN:
    """Seed 003's embedding CNN at the sizes the attention model's "embedding" representation uses."""
    cnn = EmbeddingCNN(n_mels, PATCH_FRAMES, EMBEDDING_CHANNELS, EMBEDDING_FC_WIDTHS, 128)
    cnn.init_weights()
    return cnn


def embedding_architecture(cnn: EmbeddingCNN, channels: tuple[int, ...], fc_widths: tuple[int, ...]) -> dict:
    return {
        "n_mels": cnn.n_mels,
        "patch_frames": cnn.patch_frames,
        "channels": list(channels),
        "fc_widths": list(fc_widths),
        "out_dim": cnn.out_dim,
    }


def patch_window(frontend: LogMelConfig) -> int:
    """Samples that the front end turns into exactly PATCH_FRAMES frames."""
    return (PATCH_FRAMES - 1) * frontend.hop_length


def fixed_patches(clips: list[Clip], per_clip: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, window) windows evenly spread over each clip, and the index of the clip each came from."""
    windows, owners = [], []
    for i, clip in enumerate(clips):
        n = len(clip.audio)
        starts = [int(s) for s in np.linspace(0, max(0, n - window), per_clip)]
        windows.append(take_windows(clip.audio, starts, window))
        owners += [i] * len(starts)
    return np.concatenate(windows), np.array(owners)


@torch.no_grad()
def batched(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 256) -> torch.Tensor:
    """function over x in chunks of `size` rows, without gradients (bounded memory on long inputs)."""
    return torch.cat([function(x[i : i + size]) for i in range(0, len(x), size)])


def pretrain_embedding(options: PretrainOptions) -> dict:
    """Pre-trains the embedding CNN with one objective, keeps the best epoch on validation, writes the checkpoint."""
    if options.objective not in OBJECTIVES:
        raise UserError(f"unknown pre-training objective {options.objective!r}; known: {', '.join(OBJECTIVES)}")
    frontend = LOGMEL_PRESETS["realtime"]
    train_clips, classes, _ = audio_clips(options.data, "train", frontend.sample_rate, options.workers)
    val_clips, _, _ = audio_clips(options.data, "val", frontend.sample_rate, options.workers)
    if not train_clips or not val_clips:
        raise UserError(f"{options.data} has no training or no validation clips with audio")
    targets, _ = encode_targets([c.record for c in train_clips], classes)
    val_targets, _ = encode_targets([c.record for c in val_clips], classes)
    logmel = LogMel(frontend)
    window = patch_window(frontend)

    torch.manual_seed(options.fit.seed)
    encoder = new_embedding_cnn(frontend.n_mels)
    # Fixed input standardisation from the training patches, so corruptions and targets share one scale.
    sample, _ = fixed_patches(train_clips, 3, window)
    sample_logmel = batched(logmel, torch.from_numpy(sample))
    encoder.standardise.fit_standard(sample_logmel.permute(0, 2, 1).reshape(-1, frontend.n_mels))

    val_windows, owners = fixed_patches(val_clips, options.val_patches_per_clip, window)
    val_logmel = batched(logmel, torch.from_numpy(val_windows))
    denoising = options.objective in CORRUPTIONS
    model: nn.Module = (
        DenoisingAutoencoder(encoder, CORRUPTIONS[options.objective])
        if denoising
        else PatchClassifier(encoder, len(classes))
    )

    def batches(epoch: int):
        rng = np.random.default_rng([options.fit.seed, epoch])
        order = balanced_indices(targets, len(train_clips) * options.patches_per_clip, rng)
        for start in range(0, len(order), options.batch_size):
            chosen = order[start : start + options.batch_size]
            with torch.no_grad():
                patches = logmel(torch.from_numpy(random_windows(train_clips, chosen, window, rng)))
            if denoising:
                clean = encoder.standardise(patches)
                yield clean, clean  # reconstruct the clean patch from its corrupted copy
            else:
                yield patches, torch.from_numpy(targets[chosen])

    def loss_fn(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if denoising:
            return nn.functional.mse_loss(outputs, target)
        return nn.functional.cross_entropy(outputs, target)

    @torch.no_grad()
    def validate() -> float:
        """fit() keeps the highest score: the validation F1, or minus the validation reconstruction error
        (the same corruption draw every epoch, so epochs compare)."""
        if not denoising:
            scores = batched(lambda x: torch.softmax(model(x), dim=1), val_logmel).numpy()
            return classification_report(scores, val_targets[owners], classes)["f1_macro"]
        generator = torch.Generator().manual_seed(1234)
        clean = encoder.standardise(val_logmel)
        errors = [
            nn.functional.mse_loss(model(clean[i : i + 256], generator=generator), clean[i : i + 256]).item()
            for i in range(0, len(clean), 256)
        ]
        return -float(np.mean(errors))

    options.out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        initial = validate()
    result = fit(model, batches, loss_fn, validate, options.fit, label=f"pre-training embedding ({options.objective})")
    architecture = embedding_architecture(encoder, EMBEDDING_CHANNELS, EMBEDDING_FC_WIDTHS)
    score_name = "val_f1" if not denoising else "val_reconstruction_mse"
    best = result.best_val_f1 if not denoising else -result.best_val_f1
    summary = {
        "objective": options.objective,
        "data": str(options.data),
        "architecture": architecture,
        "frontend": frontend.to_dict(),
        "n_train": len(train_clips),
        "n_val_patches": len(val_windows),
        score_name: best,
        f"initial_{score_name}": initial if not denoising else -initial,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_seconds": round(result.seconds, 1),
        "options": {**asdict(options.fit), "batch_size": options.batch_size, "patches": options.patches_per_clip},
        "history": result.history,  # "val_f1" holds the validation score above (negated error when denoising)
    }
    torch.save({"architecture": architecture, "state_dict": encoder.state_dict(), "summary": summary}, options.out)
    options.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_embedding(path: Path, cnn: EmbeddingCNN) -> dict:
    """Loads a pre-trained checkpoint into `cnn` after checking the architectures match; returns its summary."""
    if not path.exists():
        raise UserError(f"{path}: no such embedding checkpoint (made by `python -m streamrec.train.seed003 pretrain`)")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in saved["architecture"].items()}
    conv_widths = [m.out_channels for m in cnn.convs if isinstance(m, nn.Conv2d)]
    dense_widths = [m.out_features for m in cnn.dense if isinstance(m, nn.Linear)]
    actual = embedding_architecture(cnn, tuple(conv_widths), tuple(dense_widths[:-1]))
    if expected != actual:
        raise UserError(f"{path}: pre-trained as {expected}, but the attention model's embedding is {actual}")
    cnn.load_state_dict(saved["state_dict"])
    return saved["summary"]


class AttentionHead(nn.Module):
    """The attention model from its representation on: what trains over a frozen representation. It
    holds the whole model, so fit() keeps and restores the model's best weights."""

    def __init__(self, model: AttentionAIR) -> None:
        super().__init__()
        self.model = model

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        return self.model.attend(representation)


def represent_clips(model: AttentionAIR, logmel: LogMel, clips: list[Clip], window: int) -> torch.Tensor:
    """(n_clips, features, steps, 1): what the head sees of each clip's central `window` samples."""
    chunks = []
    for i in range(0, len(clips), 32):
        audio = [c.audio for c in clips[i : i + 32]]
        windows = np.concatenate([take_windows(a, [max(0, (len(a) - window) // 2)], window) for a in audio])
        chunks.append(batched(model.embed_patches, logmel(torch.from_numpy(windows)), size=32))
    return torch.cat(chunks)


def freeze_representation(
    model: AttentionAIR, logmel: LogMel, setup: AudioSetup, train_clips: list[Clip], embedding: Path | None
) -> None:
    """Seed 003's second stage set-up: loads the pre-trained embedding CNN (or keeps the random one and
    fits its input standardisation), freezes it, and fits the [0, 1] scaling of what the head sees,
    all on training clips."""
    step = max(1, len(train_clips) // SCALER_CLIPS)
    sample = [c.audio for c in train_clips[::step]]
    window = eval_window(setup, min(len(a) for a in sample))
    windows = np.concatenate([take_windows(a, crop_starts(len(a), window, setup), window) for a in sample])
    features = batched(logmel, torch.from_numpy(windows), size=32)
    if model.embedding is not None:
        if embedding is not None:
            summary = load_embedding(embedding, model.embedding)
            log.info("attention over the embedding pre-trained with %s (%s)", summary["objective"], embedding)
        else:
            model.embedding.standardise.fit_standard(features.permute(0, 2, 1).reshape(-1, features.shape[1]))
            log.info("attention over a random, frozen embedding CNN")
    for module in model.frozen_modules():
        module.requires_grad_(False)
    raw = batched(model.raw_representation, features, size=32)  # (n, features, steps, 1)
    model.scaler.fit_range(raw.squeeze(-1).permute(0, 2, 1).reshape(-1, raw.shape[1]))
