"""Grad-CAM for the live runtime (`--explain`): one explanation per new frame of a stream, as a coarse grid
and a small JPEG overlay for the prediction event's `explain` field. The math is streamrec.core.gradcam."""

from __future__ import annotations

import base64

import cv2
import numpy as np

from streamrec.core.bundle import Bundle
from streamrec.core.gradcam import FrameNetwork, gradcam_grid, upsample_map
from streamrec.core.models import load_network


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
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    heat = cv2.applyColorMap((255 * upsample_map(cam, size, size)).clip(0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), 0.55, heat, 0.45, 0)
    ok, encoded = cv2.imencode(".jpg", blended, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")
