"""Grad-CAM (Selvaraju et al., used by seed 004) for the frame network: where in a frame the evidence for a class lies.

The frame network ends in global average pooling of its last convolution's maps A_k followed by a
head, so Grad-CAM's map for class c is ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of
d logit_c / d A_k. `gradcam_grid` gives a coarse grid for one uint8 frame, small enough for the
live runtime to send beside a prediction; `gradcam_maps` is the batched form used by
`streamrec analyze`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class FeatureMapTrunk(Protocol):
    def feature_maps(self, images: torch.Tensor) -> torch.Tensor: ...


class FrameNetwork(Protocol):
    """What Grad-CAM needs of a frame network (train.models.video.FrameNet has it): a trunk whose
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
    from .features import frames_to_tensor

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


class LiveExplainer:
    """Grad-CAM for the live runtime (`--explain`): the bundle's frame network in torch (engines have no
    gradients), one explanation per new frame of a stream, as a coarse grid and a small JPEG of the
    frame with the map laid over it, for the prediction event's `explain` field."""

    def __init__(self, frame_network: FrameNetwork, classes: tuple[str, ...], grid: int = 7, thumbnail: int = 112):
        self.frame_network = frame_network
        self.classes = classes
        self.grid = grid
        self.thumbnail = thumbnail
        self._last: dict[str, tuple[object, dict]] = {}  # stream -> (frame key and class, its explanation)

    @classmethod
    def from_bundle(cls, bundle_path: object = None) -> LiveExplainer:
        from train.models import load_network

        from .bundle import Bundle

        bundle = Bundle.load(bundle_path)  # type: ignore[arg-type]
        if not bundle.has("video"):
            raise ValueError("--explain needs a bundle with a frame network")
        return cls(load_network(bundle, "video").eval(), bundle.classes)

    def explain(self, stream: str, frame_key: object, image: np.ndarray, class_name: str) -> dict:
        """The explanation of one frame for one class, computed once per (frame, class) of a stream."""
        cached = self._last.get(stream)
        if cached is not None and cached[0] == (frame_key, class_name):
            return cached[1]
        grid = gradcam_grid(self.frame_network, image, self.classes.index(class_name), self.grid)
        explanation = {
            "class": class_name,
            "grid": [[round(float(v), 2) for v in row] for row in grid],
            "overlay": overlay_jpeg(image, grid, self.thumbnail),
        }
        self._last[stream] = ((frame_key, class_name), explanation)
        return explanation


def overlay_jpeg(image: np.ndarray, cam: np.ndarray, size: int = 112, quality: int = 70) -> str:
    """The frame (H, W, 3 uint8 RGB) shrunk to size x size with the map in a heat colour scale over it,
    as a data: URL (a few kB) that a browser shows as it is."""
    import base64

    import cv2

    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    heat = cv2.applyColorMap((255 * upsample_map(cam, size, size)).clip(0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), 0.55, heat, 0.45, 0)
    ok, encoded = cv2.imencode(".jpg", blended, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")
