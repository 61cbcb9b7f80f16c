"""Numpy glue between the networks' outputs and what follows them, shared by the runtime, evaluation,
training and the benchmark so that each is computed one way: softmax, the "no instrument" column, and
the fusion network's inputs, and the rule that turns a bundle's modalities into its fused scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

FUSION_RULES = ("network", "product")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32 like the engines' outputs."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def split_background(probabilities: np.ndarray, background: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(..., outputs) audio probabilities -> (the distribution over the taxonomy's classes, the "no
    instrument" probability or None). With `background` the last column is "no instrument": it is split
    off and the rest renormalised, so audio scores compare with frame and fused ones."""
    if not background:
        return probabilities, None
    instruments = probabilities[..., :-1]
    return instruments / np.clip(instruments.sum(axis=-1, keepdims=True), 1e-9, None), probabilities[..., -1]


def slot_indices(count: int, k: int) -> np.ndarray:
    """Which of `count` frames (oldest first) fill the fusion network's k slots: the newest k, or all of
    them repeated cyclically when fewer than k. Indexes numpy arrays and torch tensors alike."""
    if count <= 0:
        raise ValueError("no frames to fill the slots with")
    return np.arange(k) % count if count < k else np.arange(count - k, count)


def spread_indices(count: int, k: int) -> np.ndarray:
    """At most k of `count` frames evenly spread over a clip (all of them when count <= k): the frames a
    clip-level prediction (evaluation, training) gives the fusion network."""
    return np.linspace(0, count - 1, min(k, count)).round().astype(int)


def fusion_inputs(
    audio: np.ndarray | None, frames: np.ndarray | None, k: int, audio_dim: int, video_dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fusion network's inputs for n audio windows that share one set of frames.

    audio: (n, audio_dim) window embeddings, or None without audio; frames: (m, video_dim) frame
    embeddings, oldest first, or None / empty without video (slot_indices picks k of them).
    Returns float32 audio (n, audio_dim), frames (n, k, video_dim) and the presence mask (n, 2), n >= 1;
    an absent modality is zeros with its mask column 0.
    """
    has_audio, has_video = audio is not None and len(audio) > 0, frames is not None and len(frames) > 0
    n = len(audio) if has_audio else 1
    a = np.asarray(audio, np.float32) if has_audio else np.zeros((1, audio_dim), np.float32)
    slots = np.asarray(frames, np.float32)[slot_indices(len(frames), k)] if has_video else None
    v = np.zeros((n, k, video_dim), np.float32)
    if slots is not None:
        v[:] = slots
    present = np.tile(np.array([[float(has_audio), float(has_video)]], np.float32), (n, 1))
    return a, v, present


@dataclass(frozen=True)
class FusionRule:
    """How a bundle's fused scores are made from its modalities.

    "network": the late-fusion network (seed paper, section 3.3) over the audio and frame embeddings.
    "product": a product of experts. Each class scores the weighted geometric mean of its audio and frame
    probabilities, audio ** audio_weight * frames ** (1 - audio_weight), not renormalised: where the two
    modalities agree the scores are theirs, where they disagree every score is low and nothing turns on
    (the scores sum to at most 1, and to 1 only when the modalities agree). With one modality, that
    modality's probabilities. The fusion network is trained on the corpus, where audio alone is nearly
    perfect, so it learns to follow the audio; on material from sources training never saw each modality
    errs on its own and the product lets one veto the other (docs/results.md). `streamrec tune` chooses
    between them on source-disjoint validation clips and writes the choice into the bundle's manifest.

    Before either, each modality's probabilities are recalibrated by per-class log offsets (empty: none),
    p * exp(offset) renormalised. Training sees one or two sample sets and a few pictures per class, so on other
    material a network under-calls the classes whose training sources were narrow (one accordion sample set) and
    over-calls those with many (22 drum pictures). `streamrec tune` fits the offsets on source-disjoint
    validation clips (train/calibration.py); the reported audio and frame scores are the recalibrated ones.

    At run time the frame probabilities are the mean over the newest `video_frames` frames (None: all k the
    fusion network takes). At 1 fps a mean over k = 5 frames still shows the old instrument for seconds after a
    change, which holds the product down; fewer frames follow a change sooner but are noisier. `streamrec tune`
    chooses the count with the smoothing, on the val long clips. A clip's scores (evaluation) use all its frames.

    A bundle with a tagger (streamrec.core.models.tagger) has its audio modality mixed first: the weighted
    geometric mean of the audio network's and the tagger's instrument probabilities, the tagger's weight
    `tagger_share` (0: the audio network alone), renormalised; the class offsets then apply to the mix.
    `streamrec tune` chooses the share on the val clips.
    """

    kind: str = "network"
    audio_weight: float = 0.5
    audio_offsets: tuple[float, ...] = ()  # per class, added to the audio's log-probabilities
    video_offsets: tuple[float, ...] = ()  # per class, added to the frames' log-probabilities
    video_frames: int | None = None  # newest frames averaged at run time; None: all k
    tagger_share: float = 0.0  # the tagger's weight in the audio modality's geometric mean

    def __post_init__(self) -> None:
        if self.kind not in FUSION_RULES:
            raise ValueError(f"unknown fusion rule {self.kind!r}; choose from {', '.join(FUSION_RULES)}")
        if not 0 <= self.audio_weight <= 1:
            raise ValueError(f"the audio weight must lie in [0, 1], got {self.audio_weight}")
        if not 0 <= self.tagger_share <= 1:
            raise ValueError(f"the tagger's share must lie in [0, 1], got {self.tagger_share}")
        if self.video_frames is not None and self.video_frames < 1:
            raise ValueError(f"video_frames must be at least 1 (or None for all), got {self.video_frames}")
        for name in ("audio_offsets", "video_offsets"):  # JSON gives lists: keep the rule hashable and comparable
            offsets = tuple(float(x) for x in getattr(self, name))
            if not all(math.isfinite(x) for x in offsets):
                raise ValueError(f"{name} must be finite numbers, got {offsets}")
            object.__setattr__(self, name, offsets)

    @classmethod
    def default(cls, has_fusion_network: bool) -> FusionRule:
        """The rule of a bundle that names none: its fusion network, or the product without one."""
        return cls("network" if has_fusion_network else "product")

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], has_fusion_network: bool) -> FusionRule:
        """The rule a manifest's "fusion_rule" names; without one, the fusion network where the bundle has one
        and the product otherwise."""
        raw = manifest.get("fusion_rule")
        if raw is None:
            return cls.default(has_fusion_network)
        rule = cls(
            raw["kind"],
            float(raw.get("audio_weight", 0.5)),
            tuple(raw.get("audio_offsets", ())),
            tuple(raw.get("video_offsets", ())),
            raw.get("video_frames"),
            float(raw.get("tagger_share", 0.0)),
        )
        if rule.kind == "network" and not has_fusion_network:
            raise ValueError('the manifest\'s fusion_rule is "network" but the bundle has no fusion network')
        return rule

    def to_dict(self) -> dict[str, Any]:
        offsets = {
            name: list(getattr(self, name)) for name in ("audio_offsets", "video_offsets") if getattr(self, name)
        }
        frames = {"video_frames": self.video_frames} if self.video_frames is not None else {}
        tagger = {"tagger_share": self.tagger_share} if self.tagger_share else {}
        return {"kind": self.kind, "audio_weight": self.audio_weight, **offsets, **frames, **tagger}

    def mix_audio(self, audio: np.ndarray | None, tagger: np.ndarray | None) -> np.ndarray | None:
        """(..., classes) instrument probabilities of the audio network mixed with the tagger's (either None: the
        audio network's unchanged)."""
        if audio is None or tagger is None or self.tagger_share == 0:
            return audio
        s = self.tagger_share
        log_mix = (1 - s) * np.log(np.asarray(audio, np.float64) + 1e-9) + s * np.log(np.asarray(tagger) + 1e-9)
        mix = np.exp(log_mix - log_mix.max(axis=-1, keepdims=True))
        return (mix / mix.sum(axis=-1, keepdims=True)).astype(np.float32)

    def calibrate(self, modality: str, probabilities: np.ndarray | None) -> np.ndarray | None:
        """(..., classes) probabilities of "audio" or "video" recalibrated by that modality's class offsets
        (unchanged without offsets; None stays None)."""
        offsets = {"audio": self.audio_offsets, "video": self.video_offsets}[modality]
        if probabilities is None or not offsets:
            return probabilities
        if probabilities.shape[-1] != len(offsets):
            raise ValueError(f"{len(offsets)} {modality} offsets for {probabilities.shape[-1]} classes")
        weighted = np.asarray(probabilities, np.float64) * np.exp(np.asarray(offsets))
        return (weighted / np.clip(weighted.sum(axis=-1, keepdims=True), 1e-12, None)).astype(np.float32)

    def product(self, audio: np.ndarray | None, frames: np.ndarray | None) -> np.ndarray:
        """(classes,) fused scores from the (classes,) audio and frame probabilities, either None when that
        modality is absent (not both)."""
        if audio is None or frames is None:
            present = audio if audio is not None else frames
            if present is None:
                raise ValueError("the product of experts needs the audio or the frame probabilities")
            return np.asarray(present, np.float32)
        w = self.audio_weight
        return (np.asarray(audio, np.float64) ** w * np.asarray(frames, np.float64) ** (1 - w)).astype(np.float32)
