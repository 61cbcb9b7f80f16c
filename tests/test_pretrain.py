"""Seed 003's pre-training (corruptions, decoder, denoising) and the attention model over a frozen representation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from streamrec.core.audio_setup import make_setup
from streamrec.core.bundle import Bundle
from streamrec.core.models import load_network
from streamrec.core.models.audio import AttentionAIR, EmbeddingCNN, build_audio_model, default_dims
from streamrec.train.loop import FitOptions
from streamrec.train.pretrain import (
    PATCH_FRAMES,
    Decoder,
    DenoisingAutoencoder,
    PretrainOptions,
    bernoulli_mask,
    gaussian_noise,
    new_embedding_cnn,
    pretrain_embedding,
)
from streamrec.train.seed003 import report


def test_gaussian_noise_adds_zero_mean_noise_of_the_given_std() -> None:
    x = torch.full((200, 500), 3.0)
    generator = torch.Generator().manual_seed(0)
    noise = gaussian_noise(x, generator=generator) - x
    assert noise.std().item() == pytest.approx(0.1, rel=0.02)
    assert abs(noise.mean().item()) < 0.002
    assert (gaussian_noise(x, std=0.5, generator=generator) - x).std().item() == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("drop_rate", [0.5, 0.2])
def test_bernoulli_mask_drops_that_share_and_keeps_the_rest(drop_rate: float) -> None:
    x = torch.rand(200, 500) + 1.0  # never 0 before the mask
    masked = bernoulli_mask(x, drop_rate=drop_rate, generator=torch.Generator().manual_seed(0))
    dropped = masked == 0
    assert dropped.float().mean().item() == pytest.approx(drop_rate, abs=0.01)
    torch.testing.assert_close(masked[~dropped], x[~dropped])


def test_decoder_grows_an_embedding_back_to_a_patch() -> None:
    assert Decoder.output_frames() == PATCH_FRAMES == 96
    assert Decoder(128, 64)(torch.randn(5, 128)).shape == (5, 64, 96)
    autoencoder = DenoisingAutoencoder(new_embedding_cnn(64), gaussian_noise)
    patches = torch.randn(3, 64, PATCH_FRAMES)
    assert autoencoder(patches).shape == patches.shape
    with pytest.raises(ValueError, match="96 frames"):
        DenoisingAutoencoder(EmbeddingCNN(64, 50, (8,), (), 16), gaussian_noise)


@pytest.mark.slow  # training steps
@pytest.mark.parametrize("corruption", [gaussian_noise, bernoulli_mask])
def test_a_few_denoising_steps_lower_the_reconstruction_error(corruption) -> None:
    torch.manual_seed(0)
    # Structured standardised "log-mel": a few smooth spectral shapes, as real patches are.
    bands = torch.linspace(0, 3, 64)
    clean = torch.stack([torch.sin(bands * (1 + i % 4))[:, None].expand(64, PATCH_FRAMES) for i in range(8)])
    autoencoder = DenoisingAutoencoder(new_embedding_cnn(64), corruption)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=3e-4)

    def error() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(autoencoder(clean, torch.Generator().manual_seed(1)), clean).item()

    before = error()
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(autoencoder(clean), clean).backward()
        optimizer.step()
    assert error() < 0.5 * before


def test_embedding_representation_rebuilds_from_its_dims_with_its_scaling(tmp_path: Path) -> None:
    dims = default_dims("attention", 3, 64, "embedding")
    model = build_audio_model(dims).eval()
    assert isinstance(model, AttentionAIR) and model.embedding is not None
    model.scaler.offset.fill_(0.25)  # a fitted scaling is part of the saved state
    setup = make_setup("attention")
    bundle = Bundle.create(tmp_path / "b", ("a", "b", "c"))
    bundle.save_network("audio", model, "attention", dims.to_dict(), {"setup": setup.to_dict()})
    rebuilt = load_network(Bundle.load(tmp_path / "b"), "audio")
    x = torch.randn(2, 64, 300)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    with pytest.raises(ValueError, match="only the attention model"):
        default_dims("han", 3, 64, "logmel")


@pytest.mark.slow  # tiny_corpus, two training runs
def test_pretrained_embedding_stays_frozen_while_the_attention_head_trains(
    tiny_corpus: Path, tmp_path: Path, streamrec_cli
) -> None:
    """Pre-training (classification: the quickest to run), then the attention head over the frozen
    embedding; the report reads the run back."""
    runs = tmp_path / "runs"
    checkpoint = runs / "pretrain" / "classification.pt"
    quick = FitOptions(max_epochs=1, patience=1, learning_rate=1e-3)
    summary = pretrain_embedding(PretrainOptions(tiny_corpus, checkpoint, "classification", quick, workers=1))
    assert checkpoint.exists() and summary["epochs"] == 1
    pretrained = torch.load(checkpoint, weights_only=False)["state_dict"]

    # The second stage through the CLI, as scripts/seed003_experiments.sh runs it.
    out = runs / "classification"
    code = streamrec_cli(
        *("train", "audio", "--arch", "attention", "--data", str(tiny_corpus), "--out", str(out)),
        *("--epochs", "2", "--patience", "2", "--lr", "1e-2", "--batch-size", "4", "--workers", "1"),
        *("--representation", "embedding", "--embedding", str(checkpoint)),
    )
    assert code == 0
    summary = json.loads((out / "manifest.json").read_text())["networks"]["audio"]["metrics"]["val"]
    entry = Bundle.load(out).network("audio")
    # The head trained and validated on representations computed once; the full model agrees with them.
    best = max(h["val_f1"] for h in entry["training"]["history"])
    assert summary["f1_macro"] == pytest.approx(best, abs=1e-6)
    model = load_network(Bundle.load(out), "audio")
    for name, value in pretrained.items():
        torch.testing.assert_close(model.embedding.state_dict()[name], value, msg=f"embedding.{name} changed")
    initial = build_audio_model(model.dims)
    assert not torch.equal(model.activity.weight, initial.activity.weight)  # the head did train
    scale = model.scaler.scale
    assert torch.all(scale >= 0) and torch.any(scale > 0)  # the [0, 1] scaling was fitted

    table = report(runs, tmp_path / "figures")
    assert "CNN, classification" in table and "violin" in table
    assert (tmp_path / "figures" / "seed003_f1_per_class.png").stat().st_size > 1000
    assert json.loads(checkpoint.with_suffix(".json").read_text())["objective"] == "classification"
    shutil.rmtree(runs)
