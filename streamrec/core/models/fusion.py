"""Late fusion (seed paper, section 3.3): the penultimate features of k frames and one audio window,
projected to a common size n and stacked as (k + 1, n), then two fully connected layers of 1024
with ReLU and batch normalisation, and a softmax classifier.

Missing modalities are part of the design: a presence mask zeroes the absent slots and is given
to the network as two extra inputs, and training drops modalities at random, so a stream without
audio or without frames still gets a fused prediction. streamrec.core.scores.fusion_inputs builds the
inputs (numpy) for every caller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FusionDims:
    n_classes: int
    audio_dim: int  # penultimate size of the audio network
    video_dim: int  # penultimate size of the frame network
    k_frames: int = 5  # frame slots
    common_dim: int = 128  # n: both modalities are projected to this size
    hidden: int = 1024
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> FusionDims:
        return cls(**raw)


class LateFusion(nn.Module):
    """forward(audio (batch, audio_dim), frames (batch, k, video_dim), present (batch, 2)) -> logits (batch, classes).

    present[:, 0] is 1 where the audio embedding is real, present[:, 1] where the frames are.
    """

    def __init__(self, dims: FusionDims) -> None:
        super().__init__()
        self.dims = dims
        self.audio_proj = nn.Linear(dims.audio_dim, dims.common_dim)
        self.video_proj = nn.Linear(dims.video_dim, dims.common_dim)
        flat = (dims.k_frames + 1) * dims.common_dim + 2
        self.body = nn.Sequential(
            nn.Linear(flat, dims.hidden),
            nn.ReLU(),
            nn.BatchNorm1d(dims.hidden),
            nn.Dropout(dims.dropout),
            nn.Linear(dims.hidden, dims.hidden),
            nn.ReLU(),
            nn.BatchNorm1d(dims.hidden),
            nn.Dropout(dims.dropout),
        )
        self.classifier = nn.Linear(dims.hidden, dims.n_classes)

    def stack(self, audio: torch.Tensor, frames: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The (batch, k + 1, n) input of the paper, absent modalities zeroed."""
        a = self.audio_proj(audio) * present[:, :1]
        v = self.video_proj(frames) * present[:, 1:2, None]
        return torch.cat([v, a.unsqueeze(1)], dim=1)

    def forward(self, audio: torch.Tensor, frames: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        stacked = self.stack(audio, frames, present)
        return self.classifier(self.body(torch.cat([stacked.flatten(1), present], dim=1)))
