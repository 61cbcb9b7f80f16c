"""Numpy glue between the networks' outputs and what follows them, shared by the runtime, evaluation,
training and the benchmark so that each is computed one way: softmax, the "no instrument" column, and
the fusion network's inputs.
"""

from __future__ import annotations

import numpy as np


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
