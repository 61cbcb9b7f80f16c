"""Frame-trunk features, computed once per clip and cached: the frozen backbone is the costly part of
the frame network on a CPU, so training and evaluating the head reuse its outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamrec.core.dataset import Clip, default_cache_dir
from streamrec.core.features import frames_to_tensor
from streamrec.core.models.video import FrameNet
from streamrec.train import distributed

log = logging.getLogger(__name__)

BATCH = 32  # frames per trunk forward pass

# Picture styles, extra training views of each frame. The corpus draws instruments as coloured emoji and clip
# art; pictures from elsewhere are often flat icons, silhouettes or line drawings (field-dev's are). The frame
# trunk is frozen and its features cached, so a style is a fixed view computed once, drawn like a flip.
PICTURE_STYLES = ("gray", "poster")
_LUMA = (0.299, 0.587, 0.114)


def styled(images: torch.Tensor, style: str) -> torch.Tensor:
    """(n, 3, H, W) pictures in [0, 1] redrawn in a style: "gray", luminance with its contrast stretched
    around the median (shapes read as silhouettes); "poster", three flat levels per channel (icon colours)."""
    if style == "gray":
        luma = (images * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        median = luma.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
        return torch.sigmoid((luma - median) * 8.0).expand(-1, 3, -1, -1).contiguous()
    if style == "poster":
        return (images * 2.0).round() / 2.0
    raise ValueError(f"unknown picture style {style!r}; choose from {', '.join(PICTURE_STYLES)}")


def trunk_fingerprint(model: FrameNet) -> str:
    """sha1 of the trunk's weights: a randomly initialised or retrained trunk never reuses stock features."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.trunk.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _key(clip: Clip, fingerprint: str, flips: bool, style: str | None = None, stage: str = "pooled") -> str:
    stat = clip.record.path.stat()
    identity = {
        "path": str(clip.record.path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "n": len(clip.frames),
        "trunk": fingerprint,
        "flips": flips,
        "version": 1,
        **({"style": style} if style else {}),  # the unstyled views keep the keys they always had
        **({"stage": stage} if stage != "pooled" else {}),
    }
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def trunk_features(
    clips: list[Clip],
    model: FrameNet,
    flips: bool = True,
    cache_dir: Path | None = None,
    progress: bool = True,
    styles: tuple[str, ...] = (),
) -> list[np.ndarray | None]:
    """Per clip: (n_frames, views, trunk_dim) float32, None without video. Views: the frames (index 0), then
    horizontally flipped when `flips`, then each of `styles` (PICTURE_STYLES), each of those flipped too.

    Cached on disk by the clip file's identity, the trunk's weights and the style. Under torchrun the first
    process of each host computes them and the others read them from the cache.
    """
    model.trunk.eval()
    fingerprint = trunk_fingerprint(model)  # hashes every trunk weight: once, not per style
    progress = progress and distributed.is_main()
    with distributed.local_main_first():
        views = [
            _trunk_features(clips, model, fingerprint, flips, cache_dir, progress, style) for style in (None, *styles)
        ]
    return [None if parts[0] is None else np.concatenate(parts, axis=1) for parts in zip(*views)]  # type: ignore[misc]


@torch.no_grad()
def block_features(
    clips: list[Clip], model: FrameNet, flips: bool = True, cache_dir: Path | None = None, progress: bool = True
) -> list[np.ndarray | None]:
    """Per clip: (n_frames, views, 320, 7, 7) float16 outputs of the EfficientNet-Lite0 trunk's last block (below
    its top convolution, which `--tune-top` trains), views as trunk_features'; cached the same way."""
    if not hasattr(model.trunk, "block_maps"):
        raise ValueError(f"the {model.dims.backbone} trunk has no block outputs to cache")
    model.trunk.eval()
    with distributed.local_main_first():
        return _trunk_features(
            clips, model, trunk_fingerprint(model), flips, cache_dir, progress and distributed.is_main(), None, "blocks"
        )


def _trunk_features(
    clips: list[Clip],
    model: FrameNet,
    fingerprint: str,
    flips: bool,
    cache_dir: Path | None,
    progress: bool,
    style: str | None,
    stage: str = "pooled",
) -> list[np.ndarray | None]:
    directory = cache_dir or default_cache_dir().parent / "trunk"
    directory.mkdir(parents=True, exist_ok=True)
    out: list[np.ndarray | None] = []
    label = f"[bold]frame {'block outputs' if stage == 'blocks' else 'features'}{f' ({style})' if style else ''}"
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("frames", total=len(clips))
        for clip in clips:
            bar.advance(task)
            if clip.frames is None:
                out.append(None)
                continue
            path = directory / f"{_key(clip, fingerprint, flips, style, stage)}.npy"
            if path.exists():
                out.append(np.load(path))
                continue
            images = frames_to_tensor(clip.frames)
            images = styled(images, style) if style else images
            views = [images, images.flip(-1)] if flips else [images]
            run = model.trunk.block_maps if stage == "blocks" else model.trunk
            features = torch.stack(
                [torch.cat([run(v[i : i + BATCH]) for i in range(0, len(v), BATCH)]) for v in views], dim=1
            ).numpy()
            features = features.astype(np.float16) if stage == "blocks" else features  # 31 KB a view, not 63
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # hosts may share the cache folder
            np.save(tmp, features)
            tmp.replace(path)
            out.append(features)
    return out
