"""`streamrec train fusion`: the late-fusion network over a bundle's audio and frame networks.

Two schemes (seed 004): "frozen" trains the fusion network on the features of the separately
trained extractors; "joint" trains the audio network, the frame head and the fusion network
together, starting from the separately trained weights (the frame backbone stays frozen: CPU).
Modality dropout during training teaches the network to predict from one modality alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from streamrec.core.audio_setup import AudioSetup, crop_starts, take_windows
from streamrec.core.bundle import Bundle
from streamrec.core.dataset import Clip, DecodeSpec, encode_targets, load_dataset
from streamrec.core.errors import UserError
from streamrec.core.features import LogMel
from streamrec.core.models import load_network
from streamrec.core.models.fusion import FusionDims, LateFusion
from streamrec.core.scores import fusion_inputs, spread_indices
from streamrec.train import distributed
from streamrec.train.corpus.records import training_sources
from streamrec.train.frame_features import trunk_features
from streamrec.train.loop import FitOptions, fit, plot_curves, seed_everything
from streamrec.train.metrics import classification_report
from streamrec.train.provenance import record_training_data

MODALITY_DROPOUT = 0.25  # chance, for a clip that has both, of hiding its audio (and, separately, its frames)


@dataclass(frozen=True)
class FusionTrainOptions:
    bundle: Path
    data: Path
    scheme: str = "frozen"  # or "joint"
    k_frames: int = 5
    common_dim: int = 128
    fit: FitOptions = FitOptions(patience=8)
    batch_size: int = 64
    workers: int = 2
    val_data: Path | None = None  # early stopping on this dataset's val split (a source-disjoint field-dev set)


class Extractors(torch.nn.Module):
    """The bundle's audio network and frame head, with the audio front end; embeds what fusion stacks."""

    def __init__(self, bundle: Bundle) -> None:
        super().__init__()
        self.setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
        self.logmel = LogMel(self.setup.frontend)
        self.audio = load_network(bundle, "audio")
        self.video = load_network(bundle, "video")

    def audio_windows(self, audio: np.ndarray) -> np.ndarray:
        """(n, window) the clip's evaluation windows."""
        window = self.setup.frontend.window_samples
        return take_windows(audio, crop_starts(len(audio), window, self.setup), window)

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        return self.audio.embed(self.logmel(windows))

    def embed_frames(self, trunk: torch.Tensor) -> torch.Tensor:
        return self.video.head.project(trunk)


@dataclass
class ClipInputs:
    """What fusion needs of one clip: audio windows (n, samples) and frame trunk features (n, 2, trunk_dim)."""

    windows: np.ndarray | None
    trunk: np.ndarray | None
    label: int


def clip_inputs(clips: list[Clip], extractors: Extractors, classes: tuple[str, ...]) -> list[ClipInputs]:
    targets, _ = encode_targets([c.record for c in clips], classes)
    trunks = trunk_features(clips, extractors.video)
    return [
        ClipInputs(extractors.audio_windows(c.audio) if c.audio is not None else None, t, int(y))
        for c, t, y in zip(clips, trunks, targets)
    ]


@torch.no_grad()
def fused_probabilities(
    fusion: LateFusion, extractors: Extractors, item: ClipInputs, use_audio: bool = True, use_video: bool = True
) -> np.ndarray:
    """(classes,) clip-level fused probabilities: every audio window with the clip's frames, averaged."""
    k = fusion.dims.k_frames
    has_audio, has_video = use_audio and item.windows is not None, use_video and item.trunk is not None
    frames = None
    if has_video:  # k frames evenly spread over the clip (index 0 of the trunk: the unflipped view)
        trunk = torch.from_numpy(item.trunk[spread_indices(len(item.trunk), k), 0])
        frames = extractors.embed_frames(trunk).numpy()
    audio = extractors.embed_audio(torch.from_numpy(item.windows)).numpy() if has_audio else None
    inputs = fusion_inputs(audio, frames, k, fusion.dims.audio_dim, fusion.dims.video_dim)
    logits = fusion(*(torch.from_numpy(x) for x in inputs))
    return torch.softmax(logits, dim=1).mean(dim=0).numpy()


def evaluate_fusion(
    fusion: LateFusion,
    extractors: Extractors,
    items: list[ClipInputs],
    classes: tuple[str, ...],
    use_audio: bool = True,
    use_video: bool = True,
) -> dict:
    fusion.eval()
    extractors.eval()
    scores = np.stack([fused_probabilities(fusion, extractors, it, use_audio, use_video) for it in items])
    return classification_report(scores, np.array([it.label for it in items]), classes)


def train_fusion(options: FusionTrainOptions) -> dict:
    bundle = Bundle.load(options.bundle)
    if not (bundle.has("audio") and bundle.has("video")):
        raise UserError(
            f"bundle {options.bundle} needs an audio and a video network before fusion "
            "(streamrec train audio / train video)"
        )
    extractors = Extractors(bundle)
    classes = bundle.classes
    sample_rate = extractors.setup.frontend.sample_rate
    splits = {}
    for split in ("train", "val", "test"):
        with distributed.local_main_first():  # one decoder per host fills the decode cache
            loaded = load_dataset(
                options.val_data if split == "val" and options.val_data else options.data,
                split=split,
                spec=DecodeSpec(sample_rate=sample_rate),
                classes=classes,
                workers=options.workers,
                progress=distributed.is_main(),
            )
        splits[split] = clip_inputs(loaded.clips, extractors, classes)
    if not splits["train"] or not splits["val"]:
        raise UserError(f"{options.data} has no training or no validation clips")
    dims = FusionDims(
        len(classes),
        extractors.audio.dims.embedding_dim,
        extractors.video.dims.embedding_dim,
        k_frames=options.k_frames,
        common_dim=options.common_dim,
    )
    seed_everything(options.fit.seed)  # the initial weights follow --seed too, not only the batches
    fusion = LateFusion(dims)
    joint = options.scheme == "joint"
    window = extractors.setup.frontend.window_samples
    train_items = splits["train"]

    def batches(epoch: int):
        rng = np.random.default_rng([options.fit.seed, epoch])
        order = rng.permutation(len(train_items))
        for start in range(0, len(order), options.batch_size):
            chosen = [train_items[i] for i in order[start : start + options.batch_size]]
            windows = np.zeros((len(chosen), window), np.float32)
            trunk = np.zeros((len(chosen), dims.k_frames, extractors.video.dims.trunk_dim), np.float32)
            present = np.zeros((len(chosen), 2), np.float32)
            for row, item in enumerate(chosen):
                has_audio, has_video = item.windows is not None, item.trunk is not None
                if has_audio and has_video:
                    has_audio, has_video = rng.random() >= MODALITY_DROPOUT, rng.random() >= MODALITY_DROPOUT
                    if not (has_audio or has_video):
                        has_audio = has_video = True
                if has_audio:
                    windows[row] = item.windows[rng.integers(len(item.windows))]
                if has_video:
                    n = len(item.trunk)
                    picks = np.sort(rng.choice(n, size=min(dims.k_frames, n), replace=False))
                    picks = picks[np.arange(dims.k_frames) % len(picks)]
                    trunk[row] = item.trunk[picks, rng.integers(item.trunk.shape[1], size=len(picks))]
                present[row] = (has_audio, has_video)
            labels = torch.tensor([it.label for it in chosen])
            yield (torch.from_numpy(windows), torch.from_numpy(trunk), torch.from_numpy(present)), labels

    class Combined(torch.nn.Module):
        """Extractors + fusion as one module, so the training loop sees one model."""

        def __init__(self) -> None:
            super().__init__()
            self.extractors, self.fusion = extractors, fusion

        def forward(self, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
            windows, trunk, present = inputs
            with torch.set_grad_enabled(joint and self.training):
                audio = self.extractors.embed_audio(windows)
                frames = self.extractors.embed_frames(trunk)
            return self.fusion(audio, frames, present)

        def train(self, mode: bool = True):  # frozen scheme: the extractors stay in eval mode (no dropout)
            super().train(mode)
            if not joint:
                self.extractors.eval()
            return self

    model = Combined()
    parameters = list(fusion.parameters())
    if joint:
        parameters += list(extractors.audio.parameters()) + list(extractors.video.head.parameters())
    fit_options = (
        options.fit
        if not joint
        else FitOptions(**{**asdict(options.fit), "learning_rate": min(options.fit.learning_rate, 3e-4)})
    )

    def validate() -> float:
        return evaluate_fusion(fusion, extractors, splits["val"], classes)["f1_macro"]

    started = time.monotonic()
    result = fit(
        model,
        batches,
        torch.nn.functional.cross_entropy,
        validate,
        fit_options,
        parameters=parameters,
        label=f"training fusion ({options.scheme}, k={dims.k_frames})",
    )
    if not distributed.is_main():  # rank 0 evaluates and writes the bundle; the others wait for its summary
        return distributed.from_main(None)
    test_items = splits["test"]
    both = [it for it in test_items if it.windows is not None and it.trunk is not None]
    metrics = {
        "test": evaluate_fusion(fusion, extractors, test_items, classes),
        "val": evaluate_fusion(fusion, extractors, splits["val"], classes),
        "test_both_modalities": evaluate_fusion(fusion, extractors, both, classes),
        "test_audio_removed": evaluate_fusion(fusion, extractors, both, classes, use_audio=False),
        "test_frames_removed": evaluate_fusion(fusion, extractors, both, classes, use_video=False),
    }
    reports = bundle.root / "reports"
    plot_curves(result.history, reports / f"fusion_{options.scheme}_curves.png", f"fusion ({options.scheme})")
    training = {
        "data": str(options.data),
        "independent_sources": training_sources(options.data),
        "validation": f"{options.val_data or options.data} (val split)",
        "scheme": options.scheme,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_seconds": round(result.seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "modality_dropout": MODALITY_DROPOUT,
        "options": asdict(fit_options),
        "history": result.history,
    }
    if joint:  # the jointly trained extractors replace the separately trained ones
        bundle.save_network(
            "audio",
            extractors.audio,
            bundle.network("audio")["arch"],
            bundle.network("audio")["dims"],
            {"setup": bundle.network("audio")["setup"]},
            metrics=bundle.network("audio")["metrics"],
            training={**bundle.network("audio")["training"], "fine_tuned_jointly": True},
        )
        entry = bundle.network("video")
        bundle.save_network(
            "video",
            extractors.video,
            entry["arch"],
            entry["dims"],
            {"frames": entry["frames"]},
            metrics=entry["metrics"],
            training={**entry["training"], "fine_tuned_jointly": True},
        )
    bundle.save_network(
        "fusion", fusion, "late_fusion", dims.to_dict(), {"scheme": options.scheme}, metrics=metrics, training=training
    )
    record_training_data(bundle, options.data)
    summary = {
        "scheme": options.scheme,
        **{k: {m: v[m] for m in ("n", "hit1", "hit3", "f1_macro")} for k, v in metrics.items()},
        "train_seconds": training["train_seconds"],
    }
    (reports / f"fusion_{options.scheme}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return distributed.from_main(summary)
