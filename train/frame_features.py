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


def trunk_fingerprint(model: FrameNet) -> str:
    """sha1 of the trunk's weights: a randomly initialised or retrained trunk never reuses stock features."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.trunk.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _key(clip: Clip, fingerprint: str, flips: bool) -> str:
    stat = clip.record.path.stat()
    identity = {
        "path": str(clip.record.path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "n": len(clip.frames),
        "trunk": fingerprint,
        "flips": flips,
        "version": 1,
    }
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def trunk_features(
    clips: list[Clip], model: FrameNet, flips: bool = True, cache_dir: Path | None = None, progress: bool = True
) -> list[np.ndarray | None]:
    """Per clip: (n_frames, 2 if flips else 1, trunk_dim) float32 (index 1 = horizontally flipped), None without video.

    Cached on disk by the clip file's identity and the trunk's weights. Under torchrun the first process of
    each host computes them and the others read them from the cache.
    """
    with distributed.local_main_first():
        return _trunk_features(clips, model, flips, cache_dir, progress and distributed.is_main())


def _trunk_features(
    clips: list[Clip], model: FrameNet, flips: bool, cache_dir: Path | None, progress: bool
) -> list[np.ndarray | None]:
    directory = cache_dir or default_cache_dir().parent / "trunk"
    directory.mkdir(parents=True, exist_ok=True)
    model.trunk.eval()
    fingerprint = trunk_fingerprint(model)
    out: list[np.ndarray | None] = []
    columns = (TextColumn("[bold]frame features"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("frames", total=len(clips))
        for clip in clips:
            bar.advance(task)
            if clip.frames is None:
                out.append(None)
                continue
            path = directory / f"{_key(clip, fingerprint, flips)}.npy"
            if path.exists():
                out.append(np.load(path))
                continue
            images = frames_to_tensor(clip.frames)
            views = [images, images.flip(-1)] if flips else [images]
            features = torch.stack(
                [torch.cat([model.trunk(v[i : i + BATCH]) for i in range(0, len(v), BATCH)]) for v in views], dim=1
            ).numpy()
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # hosts may share the cache folder
            np.save(tmp, features)
            tmp.replace(path)
            out.append(features)
    return out
