"""`streamrec analyze` (seed 004): importance and correlations on cases with a known answer, Grad-CAM on a
small trained network, and the command end to end on the tiny fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from streamrec.core.gradcam import gradcam_grid, gradcam_maps
from streamrec.core.models.fusion import FusionDims, LateFusion
from streamrec.train.analyze import (
    beyond_chance,
    block_means,
    class_importance,
    correlation_study,
    fusion_features,
    linear_contributions,
    spearman_matrix,
    top_features,
)
from streamrec.train.train_fusion import ClipInputs

# --- importance and correlation -------------------------------------------------------------------


def test_importance_picks_the_feature_that_drives_each_class() -> None:
    rng = np.random.default_rng(0)
    n_classes, dims = 3, 6
    driver = {0: 4, 1: 1, 2: 5}  # class c is decided by feature driver[c] alone
    weights = np.zeros((n_classes, dims))
    for c, j in driver.items():
        weights[c, j] = 2.0
    weights[:, 0] = -3.0  # a feature that only speaks against every class: max(w x, 0) keeps it out
    features = rng.uniform(0.1, 1.0, size=(90, dims))
    groups = np.repeat(np.arange(n_classes), 30)
    importance = class_importance(linear_contributions(weights, features, groups), groups, n_classes)
    for c, j in driver.items():
        assert top_features(importance[c], 1) == [j]
        assert importance[c, j] == pytest.approx(2.0 * features[groups == c, j].mean())
    assert np.all(importance[:, 0] == 0.0)


def test_a_class_without_examples_has_no_importance() -> None:
    importance = class_importance(np.ones((4, 3)), np.array([0, 0, 2, 2]), n_classes=3)
    assert np.isnan(importance[1]).all() and top_features(importance[1], 2) == []
    assert top_features(np.array([0.2, 0.9, 0.9, 0.1]), 3) == [1, 2, 0]  # ties: lower index first


def test_spearman_finds_a_planted_monotone_pair_and_matches_scipy() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    base = rng.normal(size=40)
    values = np.stack([base, np.exp(base), -(base**3), rng.normal(size=40), np.full(40, 2.0)], axis=1)
    rho = spearman_matrix(values)
    assert rho[0, 1] == pytest.approx(1.0) and rho[0, 2] == pytest.approx(-1.0)
    assert abs(rho[0, 3]) < 0.4
    assert np.isnan(rho[4]).all() and np.isnan(rho[:, 4]).all()  # a constant feature has no rank correlation
    tied = rng.integers(0, 4, size=(30, 3)).astype(float)  # ties get average ranks, as scipy's
    assert np.allclose(spearman_matrix(tied), spearmanr(tied).statistic)
    assert np.isnan(spearman_matrix(values[:2])).all()  # two examples say nothing


def test_block_means_separate_intra_from_inter_modal() -> None:
    rho = np.array(
        [
            [1.0, 0.8, 0.1, -0.1, 0.0],
            [0.8, 1.0, 0.0, 0.1, -0.1],
            [0.1, 0.0, 1.0, -0.6, 0.6],
            [-0.1, 0.1, -0.6, 1.0, -0.6],
            [0.0, -0.1, 0.6, -0.6, 1.0],
        ]
    )
    blocks = block_means(rho, n_audio=2)
    assert blocks["audio_audio"] == pytest.approx(0.8)
    assert blocks["visual_visual"] == pytest.approx(0.6)
    assert blocks["audio_visual"] == pytest.approx(0.4 / 6)


def test_beyond_chance_is_the_test_level_for_independent_features() -> None:
    rng = np.random.default_rng(4)
    latent = rng.normal(size=(30, 1))
    values = np.concatenate([latent + 0.01 * rng.normal(size=(30, 4)), rng.normal(size=(30, 60))], axis=1)
    shares = beyond_chance(spearman_matrix(values), n_audio=4, n=30)
    assert shares["audio_audio_beyond_p01"] == 1.0  # one latent behind every audio feature
    assert shares["visual_visual_beyond_p01"] < 0.03 and shares["audio_visual_beyond_p01"] < 0.03  # about 0.01
    assert np.isnan(beyond_chance(spearman_matrix(values[:3]), n_audio=4, n=3)["audio_visual_beyond_p01"])


def _features_with_planted_structure(rng: np.random.Generator, n: int = 60):
    """Two classes; within each, audio features 0-2 share one latent and visual 0-3 another, independent."""
    from streamrec.train.analyze import FusionFeatures

    audio_latent, visual_latent = rng.normal(size=(n, 1)), rng.normal(size=(n, 1))
    audio = np.concatenate([audio_latent + 0.05 * rng.normal(size=(n, 3)), rng.normal(size=(n, 5))], axis=1)
    visual = np.concatenate([visual_latent + 0.05 * rng.normal(size=(n, 4)), rng.normal(size=(n, 6))], axis=1)
    predicted = np.arange(n) % 2
    audio_contribution = np.zeros_like(audio)
    audio_contribution[:, :3] = 1.0  # the correlated features are the important ones
    visual_contribution = np.zeros_like(visual)
    visual_contribution[:, :4] = 1.0
    return FusionFeatures(
        paths=[f"clip{i}" for i in range(n)],
        labels=predicted,
        predicted=predicted,
        probabilities=np.eye(2)[predicted],
        audio=audio,
        visual=visual,
        hidden=np.zeros((n, 4)),
        audio_contribution=audio_contribution,
        visual_contribution=visual_contribution,
        hidden_contribution=np.zeros((n, 4)),
    )


def test_correlation_study_reports_intra_modal_structure_and_a_chance_level() -> None:
    features = _features_with_planted_structure(np.random.default_rng(2))
    studies = correlation_study(features, n_classes=2, top_audio=3, top_visual=4, shuffles=20, seed=0)
    for study in studies:
        assert study.n == 30
        assert sorted(study.audio_features) == [0, 1, 2] and sorted(study.visual_features) == [0, 1, 2, 3]
        assert study.rho.shape == (7, 7)
        assert study.blocks["audio_audio"] > 0.9 and study.blocks["visual_visual"] > 0.9
        assert study.blocks["audio_visual"] < 0.4
        assert 0.05 < study.blocks["audio_visual_shuffled"] < 0.4  # |rho| of unrelated features at n = 30


class _IdentityExtractors(nn.Module):
    """Extractors whose embeddings are their inputs: window rows are audio embeddings, trunk rows frame ones."""

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        return windows

    def embed_frames(self, trunk: torch.Tensor) -> torch.Tensor:
        return trunk


def test_fusion_attributions_are_weight_times_input_where_the_head_is_linear() -> None:
    """With the hidden body removed the fused logit is linear in the embeddings, and seed 004's a_i^c = dy_c/dx_i
    must reduce to the weight of x_i: the attribution is then the exact w_i^c x_i."""
    torch.manual_seed(0)
    dims = FusionDims(n_classes=3, audio_dim=4, video_dim=5, k_frames=2, common_dim=3, hidden=8)
    fusion = LateFusion(dims)
    fusion.body = nn.Identity()  # classifier over [frame slots, audio, presence]: in_features must match
    fusion.classifier = nn.Linear((dims.k_frames + 1) * dims.common_dim + 2, dims.n_classes)
    rng = np.random.default_rng(3)
    windows = rng.normal(size=(6, dims.audio_dim)).astype(np.float32)
    trunk = rng.normal(size=(2, 2, dims.video_dim)).astype(np.float32)  # 2 frames (2 views each): both are slots
    result = fusion_features(fusion, _IdentityExtractors(), [ClipInputs(windows, trunk, 1)], ["c"], progress=False)
    c = int(result.predicted[0])
    w = fusion.classifier.weight.detach().numpy()[c]
    slot_weights = w[: dims.k_frames * dims.common_dim].reshape(dims.k_frames, dims.common_dim)
    audio_weights = w[dims.k_frames * dims.common_dim : (dims.k_frames + 1) * dims.common_dim]
    audio_projection = fusion.audio_proj.weight.detach().numpy()
    video_projection = fusion.video_proj.weight.detach().numpy()
    expected_audio = (audio_weights @ audio_projection) * windows.mean(axis=0)
    expected_visual = sum((slot_weights[s] @ video_projection) * trunk[s, 0] for s in range(dims.k_frames))
    assert np.allclose(result.audio_contribution[0], expected_audio, atol=1e-5)
    assert np.allclose(result.visual_contribution[0], expected_visual, atol=1e-5)
    assert np.allclose(result.audio[0], windows.mean(axis=0)) and np.allclose(result.visual[0], trunk[:, 0].mean(0))
    assert np.allclose(result.hidden_contribution[0], w * result.hidden[0], atol=1e-5)


# --- Grad-CAM -----------------------------------------------------------------------------------


class _TinyTrunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(images).mean(dim=(2, 3))


class _TinyFrameNet(nn.Module):
    """The FrameNet interface (trunk.feature_maps, head) at 32 x 32 pixels: 16 x 16 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk, self.head = _TinyTrunk(), nn.Linear(16, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


def _planted_images(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32 x 32 noise; class 1 has a checkerboard patch in the top-left quadrant, class 0 a plain patch there;
    both have a plain distractor patch in another quadrant."""
    images = rng.uniform(0.0, 0.3, size=(n, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 2, size=n)
    checker = (np.indices((6, 6)).sum(axis=0) % 2).astype(np.float32)
    for i, label in enumerate(labels):
        top, left = rng.integers(0, 11, size=2)
        images[i, :, top : top + 6, left : left + 6] = checker if label == 1 else 0.5
        quadrant = rng.integers(1, 4)  # 1: top-right, 2: bottom-left, 3: bottom-right
        top, left = 16 * (quadrant // 2) + rng.integers(0, 11), 16 * (quadrant % 2) + rng.integers(0, 11)
        images[i, :, top : top + 6, left : left + 6] = 0.9
    return torch.from_numpy(images), torch.from_numpy(labels)


@pytest.mark.slow  # trains a small network
def test_gradcam_puts_its_mass_on_the_planted_pattern() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    network = _TinyFrameNet()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    for _ in range(150):
        images, labels = _planted_images(rng, 64)
        optimizer.zero_grad()
        nn.functional.cross_entropy(network(images), labels).backward()
        optimizer.step()
    network.eval()
    images, labels = _planted_images(rng, 128)
    with torch.no_grad():
        assert (network(images).argmax(1) == labels).float().mean() > 0.9  # it learnt the pattern
    pattern = images[labels == 1]
    cams, probabilities = gradcam_maps(network, pattern, [1] * len(pattern))
    assert cams.shape == (len(pattern), 16, 16) and probabilities.shape == (len(pattern), 2)
    assert cams.min() >= 0 and np.allclose(cams.reshape(len(cams), -1).max(1), 1.0)
    top_left_share = cams[:, :8, :8].sum(axis=(1, 2)) / cams.sum(axis=(1, 2))
    assert np.median(top_left_share) > 0.6, top_left_share  # a uniform map would give 0.25
    image = (pattern[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    grid = gradcam_grid(network, image, 1, grid=4)
    assert grid.shape == (4, 4) and grid.dtype == np.float32 and grid.max() == pytest.approx(1.0)
    assert grid[:2, :2].sum() > grid[2:, 2:].sum()


def test_gradcam_grid_on_the_frame_network() -> None:
    from streamrec.core.models.video import FrameNet, VideoDims

    torch.manual_seed(0)
    network = FrameNet(VideoDims("efficientnet_lite0", n_classes=4), load_backbone=False).eval()
    image = np.random.default_rng(0).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    images = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():  # forward() is the feature maps' global average: what Grad-CAM differentiates
        assert torch.allclose(network.trunk(images), network.trunk.feature_maps(images).mean(dim=(2, 3)))
    grid = gradcam_grid(network, image, class_index=2, grid=7)
    assert grid.shape == (7, 7) and np.all((grid >= 0) & (grid <= 1))
    with pytest.raises(ValueError):
        gradcam_grid(network, image[..., 0], class_index=2)


# --- the command ---------------------------------------------------------------------------------


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamrec", "analyze", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # tiny_corpus + tiny_bundle (a training run), then the command
def test_analyze_writes_the_report(tiny_corpus: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    done = _analyze(
        "--model", str(tiny_bundle), "--data", str(tiny_corpus), "--out", str(out), "--split", "val,test",
        "--workers", "1", "--frames-per-class", "1", "--compare", str(tiny_bundle),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    page = (out / "index.html").read_text()
    result = json.loads((out / "analysis.json").read_text())
    assert result["classes"] == ["drums", "piano", "violin"] and len(result["bundles"]) == 2
    figures = result["figures"]
    for name in [figures["example_correlation"], figures["blocks"], figures["audio_share"], figures["tsne"]]:
        assert (out / name).stat().st_size > 5_000 and name in page
    assert len(figures["correlations"]) == 2 and all((out / name).exists() for name in figures["correlations"])
    assert 1 <= len(figures["gradcam"]) <= 3
    for cam in figures["gradcam"]:
        assert (out / cam["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and cam["file"] in page
    bundle = result["bundles"][0]
    assert bundle["scheme"] == "joint" and bundle["clips"] >= 1
    for entry in bundle["classes"].values():
        assert len(entry["top_audio"]) <= 10 and len(entry["top_visual"]) <= 20


@pytest.mark.slow  # tiny_corpus
def test_analyze_with_a_bad_model_is_one_line(tiny_corpus: Path, tmp_path: Path) -> None:
    done = _analyze("--model", str(tmp_path / "nowhere"), "--data", str(tiny_corpus), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not a model bundle" in done.stderr
