"""Grad-CAM (Selvaraju et al., used by seed 004) for the frame network: where in a frame the evidence for a class lies.

The frame network ends in global average pooling of its last convolution's maps A_k followed by a
head, so Grad-CAM's map for class c is ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of
d logit_c / d A_k. `gradcam_grid` gives a coarse grid for one uint8 frame, small enough for the
live runtime to send beside a prediction (streamrec.runtime.explain); `gradcam_maps` is the batched
form used by `streamrec analyze`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from streamrec.core.features import frames_to_tensor


class FeatureMapTrunk(Protocol):
    def feature_maps(self, images: torch.Tensor) -> torch.Tensor: ...


class FrameNetwork(Protocol):
    """What Grad-CAM needs of a frame network (streamrec.core.models.video.FrameNet has it): a trunk whose
    feature maps, averaged over space, are what the head classifies."""

    trunk: FeatureMapTrunk
    head: torch.nn.Module


def gradcam_maps(
    frame_network: FrameNetwork, images: torch.Tensor, class_indices: torch.Tensor | list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of each image for its class: images (n, 3, H, W) float in [0, 1] -> maps (n, h, w) and
    probabilities (n, classes).

    Maps are at the feature-map resolution (7 x 7 for EfficientNet-Lite0 at 224) and scaled to 0..1
    per image (all zeros where nothing in the frame speaks for the class).
    """
    targets = torch.as_tensor(class_indices, dtype=torch.long).reshape(-1)
    modules = [m for m in (frame_network.trunk, frame_network.head) if isinstance(m, torch.nn.Module)]
    modes = [m.training for m in modules]
    for module in modules:
        module.eval()  # dropout off, batch norm on its running statistics: the deployed network's gradients
    try:
        with torch.no_grad():  # only the head lies between the maps and the logit: no graph through the trunk
            maps = frame_network.trunk.feature_maps(images)
        maps.requires_grad_(True)
        with torch.enable_grad():
            logits = frame_network.head(maps.mean(dim=(2, 3)))
            chosen = logits.gather(1, targets[:, None]).sum()  # images are independent: one backward serves all
            (gradients,) = torch.autograd.grad(chosen, maps)
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * maps).sum(dim=1)).detach()
    peaks = cams.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (cams / peaks).numpy(), torch.softmax(logits.detach(), dim=1).numpy()


def gradcam_grid(frame_network: FrameNetwork, image_uint8: np.ndarray, class_index: int, grid: int = 7) -> np.ndarray:
    """(grid, grid) float32 in 0..1: Grad-CAM of one (H, W, 3) uint8 RGB frame (as the runtime's frame
    preprocessing gives it) for class_index, averaged onto a coarse grid, row 0 at the top."""
    if image_uint8.ndim != 3 or image_uint8.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {image_uint8.shape}")
    with torch.no_grad():
        images = frames_to_tensor(image_uint8[None])
    maps, _ = gradcam_maps(frame_network, images, [class_index])
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(maps)[None], grid)[0, 0]
    peak = float(pooled.max())
    return (pooled / peak if peak > 0 else pooled).numpy().astype(np.float32)


def upsample_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (h, w) map bilinearly resized to (height, width), for overlaying on the frame."""
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )
    return resized[0, 0].numpy()
