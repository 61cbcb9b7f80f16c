"""`streamrec train frame-heads`: one frame network from the heads of several bundles' frame networks.

The heads must sit on the same trunk (frozen ImageNet weights: every `streamrec train video` run with the same
backbone has it) and share their dimensions. The merged network's probabilities are the mean of the heads'
(streamrec.core.models.video.FrameHeads): heads trained on different picture pools err on different pictures,
and where they disagree the mean is less sure, so the product of experts lets the audio decide. The runtime
cost is the trunk's, run once, plus a small head per member.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from streamrec.core.bundle import Bundle
from streamrec.core.errors import UserError
from streamrec.core.models import load_network
from streamrec.core.models.video import FrameNet, VideoDims, frame_heads
from streamrec.train.frame_features import trunk_features
from streamrec.train.metrics import plot_confusions
from streamrec.train.provenance import record_training_data
from streamrec.train.train_video import evaluate_video, video_clips

# Manifest keys of a frame network's entry that describe its weights, rewritten for the merged network; the
# others (the frame settings) are the first member's.
_WEIGHT_KEYS = ("arch", "dims", "weights", "sha256", "parameters", "metrics", "training")


def merge_frame_heads(members: list[Path], out: Path, data: Path, val_data: Path | None, workers: int) -> dict:
    """Writes OUT's frame network: the heads of the members' frame networks, in order, on the first member's
    trunk; its metrics on DATA's test split and VAL_DATA's (else DATA's) val split. Returns a summary."""
    if len(members) < 2:
        raise UserError("merging frame heads needs two bundles or more")
    bundles = [Bundle.load(m) for m in members]
    for bundle in bundles:
        if not bundle.has("video"):
            raise UserError(f"{bundle.root} has no frame network")
        if bundle.classes != bundles[0].classes:
            raise UserError(f"{bundle.root} has other classes than {bundles[0].root}")
    networks = [load_network(b, "video") for b in bundles]
    dims = [VideoDims.from_dict(b.network("video")["dims"]) for b in bundles]
    first_trunk = networks[0].trunk.state_dict()
    for bundle, d, network in zip(bundles[1:], dims[1:], networks[1:]):
        if replace(d, heads=1) != replace(dims[0], heads=1):
            raise UserError(f"{bundle.root}'s frame heads have other dimensions than {bundles[0].root}'s")
        trunk = network.trunk.state_dict()
        if any(not torch.equal(trunk[k], first_trunk[k]) for k in first_trunk):
            raise UserError(f"{bundle.root}'s frame trunk has other weights than {bundles[0].root}'s")
    heads = [head for network in networks for head in frame_heads(network.head)]
    merged = FrameNet(replace(dims[0], heads=len(heads)), load_backbone=False)
    merged.trunk.load_state_dict(first_trunk)
    for target, head in zip(frame_heads(merged.head), heads):
        target.load_state_dict(head.state_dict())
    merged.eval()

    classes = bundles[0].classes
    reports = {}
    for split, dataset in (("test", data), ("val", val_data or data)):
        clips, _ = video_clips(dataset, split, workers)
        if not clips:
            raise UserError(f"{dataset} has no {split} clips with video")
        reports[split], _ = evaluate_video(merged, trunk_features(clips, merged), clips, classes)

    target = Bundle.create(out, classes)  # refuses a bundle of other classes before anything is written
    plot_confusions(
        {f"video, {len(heads)} frame heads (test)": np.array(reports["test"]["confusion"])},
        classes,
        out / "reports" / f"video_{len(heads)}_heads_confusion.png",
    )
    first = bundles[0].network("video")
    settings = {k: v for k, v in first.items() if k not in _WEIGHT_KEYS}
    training = {
        "merged": f"the mean of {len(heads)} frame heads' probabilities, on one trunk",
        "members": [{"bundle": str(b.root), **b.network("video").get("training", {})} for b in bundles],
        "validation": f"{val_data or data} (val split)",
    }
    metrics = {"test": reports["test"], "val": reports["val"]}
    target.save_network("video", merged, first["arch"], merged.dims.to_dict(), settings, metrics, training)
    record_training_data(target, data)
    return {
        "setup": f"{len(heads)} frame heads",
        "test": {k: reports["test"][k] for k in ("n", "hit1", "hit3", "f1_macro")},
        "val_f1": reports["val"]["f1_macro"],
    }
