"""The data of `streamrec analyze` (seed 004's study), apart from its computation (streamrec.train.analyze)
and its figures (streamrec.train.analysis_figures), which both use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrec.core.dataset import Clip
from streamrec.train.train_fusion import Extractors


@dataclass(frozen=True)
class AnalyzeOptions:
    data: Path
    out: Path
    model: Path | None = None  # None: the bundled model
    compare: tuple[Path, ...] = ()  # more bundles whose importance and correlations are set beside the model's
    split: str = "test"
    top_audio: int = 10  # seed 004: top-10 audio and top-20 visual features per class
    top_visual: int = 20
    frames_per_class: int = 2  # Grad-CAM overlays written per class
    shuffles: int = 50  # repetitions of the shuffled-pairing baseline
    workers: int = 2
    seed: int = 0


@dataclass
class FusionFeatures:
    """The fusion network's view of each analysed clip (rows), with the attributions for its predicted class."""

    paths: list[str]
    labels: np.ndarray  # (n,) true class index
    predicted: np.ndarray  # (n,) fused prediction F(d)
    probabilities: np.ndarray  # (n, classes) fused, clip level
    audio: np.ndarray  # (n, audio_dim) mean window embedding
    visual: np.ndarray  # (n, video_dim) mean of the k frame-slot embeddings
    hidden: np.ndarray  # (n, hidden) the last layer's input, mean over windows
    audio_contribution: np.ndarray  # (n, audio_dim) a_i^c x_i, c = predicted
    visual_contribution: np.ndarray  # (n, video_dim)
    hidden_contribution: np.ndarray  # (n, hidden) w_i^c h_i


@dataclass
class ClassCorrelation:
    """Seed 004's per-class study: the top features by importance and their Spearman matrix."""

    class_index: int
    n: int
    audio_features: list[int]
    audio_importance: list[float]
    visual_features: list[int]
    visual_importance: list[float]
    rho: np.ndarray  # (top_audio + top_visual) square; audio first
    blocks: dict[str, float] = field(default_factory=dict)


@dataclass
class BundleAnalysis:
    name: str  # for figures and tables
    root: Path
    scheme: str
    features: FusionFeatures
    studies: list[ClassCorrelation]
    extractors: Extractors
    clips: list[Clip]
