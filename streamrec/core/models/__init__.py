"""Network architectures (audio CNNs, the frame CNN, late fusion, the tagger) and loading them from a model bundle."""

from __future__ import annotations

import torch

from streamrec.core.bundle import Bundle, BundleError
from streamrec.core.models.audio import AudioDims, build_audio_model
from streamrec.core.models.fusion import FusionDims, LateFusion
from streamrec.core.models.tagger import Tagger, TaggerDims
from streamrec.core.models.video import FrameNet, VideoDims


def build_network(kind: str, dims: dict, pretrained_backbone: bool = False) -> torch.nn.Module:
    """An untrained network of a bundle's kind from its stored dimensions. A frame backbone's ImageNet
    weights are loaded only when asked (a checkpoint overwrites them anyway)."""
    if kind == "audio":
        return build_audio_model(AudioDims.from_dict(dims))
    if kind == "video":
        return FrameNet(VideoDims.from_dict(dims), load_backbone=pretrained_backbone)
    if kind == "fusion":
        return LateFusion(FusionDims.from_dict(dims))
    if kind == "tagger":
        return Tagger(TaggerDims.from_dict(dims))
    raise BundleError(f"unknown network kind {kind!r}")


def load_network(bundle: Bundle, kind: str) -> torch.nn.Module:
    """A bundle's trained network, in eval mode."""
    checkpoint = bundle.load_checkpoint(kind)
    model = build_network(kind, checkpoint["dims"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise BundleError(f"{bundle.weights_path(kind)} does not fit its stored dimensions: {e}") from e
    return model.eval()
