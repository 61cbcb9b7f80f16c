"""`streamrec eval DATASET`: audio-only, frame-only and fused metrics of a model bundle on any dataset
in the CONTRACTS layout, as the eval JSON of CONTRACTS.md and one figure of confusion matrices."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from streamrec.bundle import Bundle
from streamrec.errors import UserError

from .dataset import DecodeSpec, load_dataset
from .metrics import plot_confusions
from .train_audio import evaluate_audio
from .train_fusion import Extractors, clip_inputs, evaluate_fusion
from .train_video import evaluate_video

MODALITIES = ("audio", "video", "fusion")
BACKENDS = ("torch",)  # engines/ adds onnxruntime and tensorrt


def evaluate(
    data: Path,
    model: Path | None = None,
    split: str = "test",
    modalities: tuple[str, ...] = MODALITIES,
    backend: str = "torch",
    workers: int = 2,
    plot: Path | None = None,
) -> dict:
    """The eval JSON (CONTRACTS.md). `n` counts the clips that have that modality; fusion covers every clip."""
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r} is not available for eval; available: {', '.join(BACKENDS)}")
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise UserError(f"unknown modality {', '.join(sorted(unknown))}; choose from {', '.join(MODALITIES)}")
    bundle = Bundle.load(model)
    missing = [m for m in modalities if m != "fusion" and not bundle.has(m)] + (
        ["fusion"] if "fusion" in modalities and not bundle.has("fusion") else []
    )
    if missing:
        raise UserError(f"bundle {bundle.root} has no {', '.join(missing)} network")
    extractors = Extractors(bundle)
    loaded = load_dataset(
        data,
        split=split,
        spec=DecodeSpec(sample_rate=extractors.setup.frontend.sample_rate),
        classes=bundle.classes,
        workers=workers,
    )
    classes = bundle.classes
    result: dict = {
        "classes": list(classes),
        "dataset": str(data),
        "split": split,
        "model": str(bundle.root),
        "backend": backend,
        "skipped": [asdict(s) for s in loaded.skipped],
    }
    if "audio" in modalities:
        with_audio = [c for c in loaded.clips if c.audio is not None]
        result["audio"] = evaluate_audio(extractors.audio, extractors.logmel, extractors.setup, with_audio, classes)[0]
    items = clip_inputs(loaded.clips, extractors, classes) if {"video", "fusion"} & set(modalities) else []
    if "video" in modalities:
        with_video = [(c, it.trunk) for c, it in zip(loaded.clips, items) if it.trunk is not None]
        result["video"] = evaluate_video(
            extractors.video, [t for _, t in with_video], [c for c, _ in with_video], classes
        )[0]
    if "fusion" in modalities:
        from .models import load_network

        result["fusion"] = evaluate_fusion(load_network(bundle, "fusion"), extractors, items, classes)
    if plot is not None:
        plot_confusions(
            {m: np.array(result[m]["confusion"]) for m in MODALITIES if m in result},
            classes,
            plot,
            title=f"{bundle.root.name} on {Path(data).name} ({split})",
        )
    return result
