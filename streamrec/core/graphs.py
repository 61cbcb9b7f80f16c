"""The graph each network kind is exported as, and the torch modules behind it: the contract between a
bundle's torch networks and every engine (streamrec.engines exports and runs these; the runtime reads their
names and metadata).

    audio   logmel (batch, n_mels, frames) float32 -> scores (batch, classes), embedding (batch, audio_dim)
    video   images (batch, 3, size, size) float32 in [0, 1] -> logits (batch, classes), embedding (batch, video_dim)
    fusion  audio (batch, audio_dim), frames (batch, k, video_dim), present (batch, 2) -> logits (batch, classes)
    tagger  mel (batch, frames, 96) -> logits (batch, classes)

Batch is the one dynamic axis; streamrec.engines.export says why the audio graph takes the log-mel (and the
tagger its own mel: streamrec.core.models.tagger).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from streamrec.core.audio_setup import AudioSetup
from streamrec.core.bundle import Bundle
from streamrec.core.models import load_network
from streamrec.core.models.audio import AudioDims, outputs_probabilities
from streamrec.core.models.fusion import FusionDims
from streamrec.core.models.tagger import N_MELS, TaggerDims, TaggerSetup, mel_frames
from streamrec.core.models.video import VideoDims


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output. `shape` has None where a dimension is dynamic (always the batch axis)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"  # numpy dtype name

    def matches(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(d is None or d == n for d, n in zip(self.shape, shape))

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} ({dims}) {self.dtype}"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    """The inputs and outputs of one kind's graph, and the nominal size of its dynamic non-batch axes."""

    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    nominal: dict[str, tuple[int, ...]]  # per input: a full shape without the batch axis (the usual window)
    scores_are_probabilities: bool = False
    frontend: dict | None = None  # audio: the LogMelConfig the caller applies before the engine; tagger: its setup
    background: bool = False  # audio: the last score column is "no instrument", not a taxonomy class


def graph_spec(bundle: Bundle, kind: str) -> GraphSpec:
    """The graph a bundle's network of this kind is exported as, read from the manifest alone."""
    entry = bundle.network(kind)
    dims = entry["dims"]
    if kind == "audio":
        setup = AudioSetup.from_dict(entry["setup"])
        frontend = setup.frontend
        audio_dims = AudioDims.from_dict(dims)
        return GraphSpec(
            kind,
            (TensorSpec("logmel", (None, frontend.n_mels, frontend.frames_per_window)),),
            (
                TensorSpec("scores", (None, audio_dims.n_classes)),
                TensorSpec("embedding", (None, audio_dims.embedding_dim)),
            ),
            {"logmel": (frontend.n_mels, frontend.frames_per_window)},
            outputs_probabilities(audio_dims),
            frontend.to_dict(),
            setup.background,
        )
    if kind == "video":
        video_dims = VideoDims.from_dict(dims)
        size = video_dims.input_size
        return GraphSpec(
            kind,
            (TensorSpec("images", (None, 3, size, size)),),
            (
                TensorSpec("logits", (None, video_dims.n_classes)),
                TensorSpec("embedding", (None, video_dims.embedding_dim)),
            ),
            {"images": (3, size, size)},
        )
    if kind == "fusion":
        f = FusionDims.from_dict(dims)
        return GraphSpec(
            kind,
            (
                TensorSpec("audio", (None, f.audio_dim)),
                TensorSpec("frames", (None, f.k_frames, f.video_dim)),
                TensorSpec("present", (None, 2)),
            ),
            (TensorSpec("logits", (None, f.n_classes)),),
            {"audio": (f.audio_dim,), "frames": (f.k_frames, f.video_dim), "present": (2,)},
        )
    if kind == "tagger":
        setup = TaggerSetup.from_dict(entry["setup"])
        mel = (mel_frames(setup.window_samples), N_MELS)
        logits = TensorSpec("logits", (None, TaggerDims.from_dict(dims).n_classes))
        return GraphSpec(kind, (TensorSpec("mel", (None, *mel)),), (logits,), {"mel": mel}, frontend=setup.to_dict())
    raise ValueError(f"unknown network kind {kind!r}")


def graph_metadata(bundle: Bundle, kind: str) -> dict[str, Any]:
    """What a caller of any engine of this kind needs besides the tensors (every engine's `metadata`)."""
    spec = graph_spec(bundle, kind)
    return {
        "kind": kind,
        "arch": bundle.network(kind)["arch"],
        "weights_sha256": bundle.network(kind)["sha256"],
        "inputs": [s.to_dict() for s in spec.inputs],
        "outputs": [s.to_dict() for s in spec.outputs],
        "scores_are_probabilities": spec.scores_are_probabilities,
        "frontend": spec.frontend,
        "background": spec.background,
    }


class AudioGraph(nn.Module):
    """logmel -> (scores, embedding). Non-attention networks reuse the embedding for the classifier."""

    def __init__(self, net: nn.Module, probabilities: bool) -> None:
        super().__init__()
        self.net, self.probabilities = net, probabilities

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.net.embed(logmel)
        # The attention network's forward() is not classifier(embed()): it pools class activity over time.
        scores = self.net(logmel) if self.probabilities else self.net.classifier(embedding)
        return scores, embedding


class VideoGraph(nn.Module):
    """images -> (logits, embedding), running the trunk once."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trunk = self.net.trunk(images)
        embedding = self.net.head.project(trunk)
        return self.net.head.logits(trunk, embedding), embedding


def graph_module(bundle: Bundle, kind: str) -> nn.Module:
    """The bundle's network of this kind wrapped to the graph's outputs, in eval mode on the CPU."""
    net = load_network(bundle, kind)
    if kind == "audio":
        return AudioGraph(net, graph_spec(bundle, kind).scores_are_probabilities).eval()
    if kind == "video":
        return VideoGraph(net).eval()
    return net.eval()  # fusion, tagger: their forward() is the graph


def example_inputs(spec: GraphSpec, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the nominal shapes: log-mel-like levels for audio and the tagger, [0, 1] images, 0/1
    presence."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in spec.inputs:
        shape = (batch, *spec.nominal[s.name])
        if s.name == "logmel":
            out[s.name] = rng.normal(-6.0, 3.0, shape).astype(np.float32)
        elif s.name == "mel":  # the tagger's log10(10000 x + 1) levels
            out[s.name] = rng.uniform(0.0, 4.0, shape).astype(np.float32)
        elif s.name == "images":
            out[s.name] = rng.random(shape, dtype=np.float32)
        elif s.name == "present":
            out[s.name] = rng.integers(0, 2, shape).astype(np.float32)
        else:
            out[s.name] = rng.standard_normal(shape).astype(np.float32)
    return out
