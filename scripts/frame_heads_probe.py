"""Frame heads compared on a field-dev set: macro F1 on its val and test splits, raw and with class offsets fitted on
val (as `streamrec tune` fits them for a bundle), for each bundle given and for the mean of their probabilities.

The trunk is frozen and shared by every head of the shipped recipe, so its features come from training's cache
(train/frame_features.py) and only each bundle's head runs: seconds a bundle once the cache is warm.

Usage: .venv/bin/python scripts/frame_heads_probe.py FIELD_DEV BUNDLE [BUNDLE ...]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from streamrec.core.bundle import Bundle
from streamrec.core.dataset import encode_targets
from streamrec.core.networks import load_network
from streamrec.core.scores import FusionRule
from streamrec.train.calibration import fit_class_offsets
from streamrec.train.frame_features import trunk_features
from streamrec.train.metrics import classification_report
from streamrec.train.train_video import frame_probabilities, video_clips

SPLITS = ("val", "test")


def report(name: str, probabilities: dict[str, np.ndarray], targets: dict[str, np.ndarray], classes) -> None:
    offsets = fit_class_offsets(probabilities["val"].astype(np.float32), targets["val"])
    rule = FusionRule("product", video_offsets=offsets)
    figures = []
    for split in SPLITS:
        p, t = probabilities[split], targets[split]
        figures += [
            classification_report(p, t, classes)["f1_macro"],
            classification_report(rule.calibrate("video", p), t, classes)["f1_macro"],
        ]
    print(f"{name}: val raw {figures[0]:.3f} offsets {figures[1]:.3f}", end=" | ")
    print(f"test raw {figures[2]:.3f} offsets {figures[3]:.3f}")


def main(field_dev: str, roots: list[str]) -> None:
    clips = {split: video_clips(field_dev, split, 2)[0] for split in SPLITS}
    classes = Bundle.load(roots[0]).classes  # every head of a comparison has the same classes
    targets = {s: encode_targets([c.record for c in clips[s]], classes)[0] for s in SPLITS}
    features, every = None, []
    for root in roots:
        model = load_network(Bundle.load(root), "video").eval()
        features = features or {split: trunk_features(c, model) for split, c in clips.items()}
        with torch.inference_mode():
            every.append(
                {s: np.stack([frame_probabilities(model.head, f).mean(axis=0) for f in features[s]]) for s in SPLITS}
            )
        report(root, every[-1], targets, classes)
    if len(every) > 1:
        report("mean of all", {s: np.mean([p[s] for p in every], axis=0) for s in SPLITS}, targets, classes)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
