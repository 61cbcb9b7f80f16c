"""`streamrec train video`: the frame network, each frame labelled with its clip's label.

The backbone is frozen (its features cached by frame_features) and the head is trained: on a
2-core CPU, fine-tuning EfficientNet-Lite0 end to end costs minutes per epoch, the head seconds.
With `tune_top` the trunk's last convolution is trained too, on cached outputs of the blocks below it (TunedTop).
Training draws k frames per clip and epoch, with random horizontal flips (and picture styles when
asked); a clip's prediction is the mean of its frames' softmax outputs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from streamrec.core.bundle import Bundle
from streamrec.core.dataset import Clip, DecodeSpec, dataset_classes, encode_targets, load_dataset
from streamrec.core.errors import UserError
from streamrec.core.features import FrameConfig
from streamrec.core.models.video import FrameNet, VideoDims, build_video_model, imagenet_rows
from streamrec.train import distributed
from streamrec.train.corpus.records import training_sources
from streamrec.train.frame_features import block_features, trunk_features
from streamrec.train.loop import FitOptions, FitResult, fit, plot_curves, seed_everything
from streamrec.train.metrics import classification_report, plot_confusions
from streamrec.train.provenance import record_training_data


@dataclass(frozen=True)
class VideoTrainOptions:
    data: Path
    out: Path
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    k_frames: int = 10  # frames drawn per clip and epoch (the seed paper compared 20/30/50/100 on 3-min videos)
    fit: FitOptions = FitOptions(patience=5)  # seed paper: early stopping after 5 epochs for video
    batch_size: int = 64
    workers: int = 2
    weights_file: Path | None = None  # local backbone weights (Inception v3)
    bundle_name: str = "video"  # network kind written into the bundle
    imagenet_prior: bool = False  # add ImageNet's own classifier rows for each class (EfficientNet-Lite0)
    zero_shot: bool = False  # no training: the ImageNet prior alone (the baseline the head must beat)
    # Early stopping and the kept epoch are decided on this dataset's "val" split when given: a set built from
    # other sources than the training data (a field-dev set), so the choice rewards instruments, not the corpus.
    val_data: Path | None = None
    picture_styles: tuple[str, ...] = ()  # extra training views (frame_features.PICTURE_STYLES)
    mixup: float = 0.0  # Beta(alpha, alpha) of feature mixup (mix_features); 0: off
    # The splits of `data` trained on. "val" joins them only when val_data chooses the epoch: the corpus splits
    # by picture, so its val clips add pictures, and selection stays on material from other sources.
    train_splits: tuple[str, ...] = ("train",)
    # Fine-tune the trunk's top convolution (1x1, 320 -> 1280) with the head, on cached outputs of the blocks below
    # it, its change from ImageNet's weights pulled to zero by the weight decay (TunedTop). EfficientNet-Lite0 only.
    tune_top: bool = False


TOP_STEP = 0.1  # the top's change is TOP_STEP * a parameter: Adam moves the ImageNet weights a tenth as fast


class TunedTop(torch.nn.Module):
    """The frame network on cached block outputs: the trunk's top convolution as its ImageNet weights plus a trained
    change, then pooling and the head. The change is TOP_STEP * `delta`, `delta` starting at 0, so the optimiser's
    weight decay on `delta` pulls the top towards its ImageNet weights rather than towards 0 (L2-SP, Li et al.
    2018): the corpus's few pictures per class must not overwrite what ImageNet learned. The top's batch norm keeps
    ImageNet's statistics; `fold()` writes the trained change into the trunk, whose format stays as it was."""

    def __init__(self, model: FrameNet) -> None:
        super().__init__()
        self.model = model
        self.model.trunk.requires_grad_(False)
        self.delta = torch.nn.Parameter(torch.zeros_like(self._conv().weight))

    def _conv(self) -> torch.nn.Conv2d:
        return self.model.trunk.net._conv_head

    def train(self, mode: bool = True) -> TunedTop:
        super().train(mode)
        self.model.trunk.eval()  # ImageNet's batch-norm statistics, whatever the mode
        return self

    def pooled(self, block_maps: torch.Tensor) -> torch.Tensor:
        """(batch, 320, 7, 7) block outputs -> (batch, 1280) trunk features under the tuned top."""
        net, conv = self.model.trunk.net, self._conv()
        maps = torch.nn.functional.conv2d(block_maps, conv.weight + TOP_STEP * self.delta, conv.bias)
        return net._swish(net._bn1(maps)).mean(dim=(2, 3))

    def forward(self, block_maps: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.pooled(block_maps))

    @torch.no_grad()
    def features(self, blocks: list[np.ndarray]) -> list[np.ndarray]:
        """Per clip, (n_frames, 1, 1280) trunk features of the unflipped frames (view 0) under the tuned top."""
        return [self.pooled(torch.from_numpy(b[:, 0].astype(np.float32))).numpy()[:, None] for b in blocks]

    @torch.no_grad()
    def fold(self) -> None:
        self._conv().weight += TOP_STEP * self.delta
        self.delta.zero_()


def mix_features(
    features: torch.Tensor, labels: torch.Tensor, alpha: float, n_classes: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup at the head's input (Zhang et al. 2018; Verma et al.'s manifold mixup): each row blended with another
    row of the batch by a Beta(alpha, alpha) weight, its target the same blend of their one-hot labels. The corpus
    has 3 to 23 pictures per class, so the head can memorise each picture's features; blends between them keep
    its decision boundaries smooth."""
    weight = torch.from_numpy(rng.beta(alpha, alpha, size=(len(labels), 1)).astype(np.float32))
    partner = torch.from_numpy(rng.permutation(len(labels)))
    targets = torch.nn.functional.one_hot(labels.long(), n_classes).float()
    return weight * features + (1 - weight) * features[partner], weight * targets + (1 - weight) * targets[partner]


def video_clips(data: Path, split: str, workers: int) -> tuple[list[Clip], tuple[str, ...]]:
    spec = DecodeSpec(sample_rate=16000, frames=FrameConfig())
    with distributed.local_main_first():  # one decoder per host fills the decode cache
        loaded = load_dataset(
            data, split=split, spec=spec, classes=dataset_classes(data), workers=workers, progress=distributed.is_main()
        )
    return [c for c in loaded.clips if c.frames is not None], loaded.classes


@torch.no_grad()
def frame_probabilities(head: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """(n_frames, classes) softmax of the unflipped frames."""
    return torch.softmax(head(torch.from_numpy(features[:, 0])), dim=1).numpy()


def evaluate_video(model: FrameNet, features: list[np.ndarray], clips: list[Clip], classes) -> tuple[dict, np.ndarray]:
    model.eval()
    scores = (
        np.stack([frame_probabilities(model.head, f).mean(axis=0) for f in features])
        if features
        else np.zeros((0, len(classes)))
    )
    targets, _ = encode_targets([c.record for c in clips], classes)
    return classification_report(scores, targets, classes), scores


def zero_shot_head(model: FrameNet, validate) -> FitResult:
    """The ImageNet prior alone: the trained branch's classifier zeroed, nothing fitted."""
    with torch.no_grad():
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.zero_()
    model.eval()
    f1 = validate()
    state = {k: v.clone() for k, v in model.head.state_dict().items()}
    return FitResult(state, 0, f1, [], 0.0, "zero-shot: nothing trained")


def train_video(options: VideoTrainOptions) -> dict:
    chosen_elsewhere = options.val_data is not None and options.val_data.resolve() != options.data.resolve()
    if "test" in options.train_splits or ("val" in options.train_splits and not chosen_elsewhere):
        raise UserError("train on the val split only with --val-data (another set chooses the epoch), never on test")
    classes = dataset_classes(options.data)
    train_clips = [  # zero-shot trains nothing: no training clips to decode
        clip
        for split in (() if options.zero_shot else options.train_splits)
        for clip in video_clips(options.data, split, options.workers)[0]
    ]
    val_clips, _ = video_clips(options.val_data or options.data, "val", options.workers)
    test_clips, _ = video_clips(options.data, "test", options.workers)
    if not (train_clips or options.zero_shot) or not val_clips:
        raise UserError(f"{options.data} has no training or no validation clips with video")
    if (options.imagenet_prior or options.zero_shot) and not (
        options.backbone == "efficientnet_lite0" and options.pretrained
    ):
        raise UserError("the ImageNet prior needs the pretrained efficientnet_lite0 backbone")
    if options.tune_top and (options.backbone != "efficientnet_lite0" or options.picture_styles or options.zero_shot):
        raise UserError("--tune-top needs the efficientnet_lite0 backbone, and no picture styles or zero-shot")
    prior = imagenet_rows(classes) if options.imagenet_prior or options.zero_shot else ()
    dims = VideoDims(options.backbone, len(classes), pretrained=options.pretrained, prior_rows=prior)
    seed_everything(options.fit.seed)  # the initial weights follow --seed too, not only the batches
    model = build_video_model(dims, options.weights_file)
    tuned = TunedTop(model) if options.tune_top else None
    splits = (("train", train_clips), ("val", val_clips), ("test", test_clips))
    features = (  # evaluation reads view 0 (the frames as they are): styles are computed for training only
        {name: block_features(clips, model) for name, clips in splits}
        if tuned
        else {
            name: trunk_features(clips, model, styles=options.picture_styles if name == "train" else ())
            for name, clips in splits
        }
    )

    def head_inputs(name: str) -> list[np.ndarray]:
        """The split's trunk features as evaluate_video reads them (under the tuned top when there is one)."""
        return tuned.features(features[name]) if tuned else features[name]  # type: ignore[arg-type]

    targets, _ = encode_targets([c.record for c in train_clips], classes)

    def batches(epoch: int):
        rng = np.random.default_rng([options.fit.seed, epoch])
        rows, labels = [], []
        for f, label in zip(features["train"], targets):
            chosen = rng.choice(len(f), size=min(options.k_frames, len(f)), replace=False)
            views = rng.integers(0, f.shape[1], size=len(chosen))  # flipped and styled views alike
            rows.append(f[chosen, views])
            labels += [label] * len(chosen)
        x, y = np.concatenate(rows), np.asarray(labels)
        order = rng.permutation(len(y))
        for start in range(0, len(order), options.batch_size):
            chosen = order[start : start + options.batch_size]
            inputs, labels = torch.from_numpy(x[chosen]).float(), torch.from_numpy(y[chosen])  # block outputs: fp16
            yield mix_features(inputs, labels, options.mixup, len(classes), rng) if options.mixup else (inputs, labels)

    def validate() -> float:
        return evaluate_video(model, head_inputs("val"), val_clips, classes)[0]["f1_macro"]

    started = time.monotonic()
    if options.zero_shot:
        result = zero_shot_head(model, validate)
    else:
        result = fit(
            tuned or model.head,
            batches,
            torch.nn.functional.cross_entropy,
            validate,
            options.fit,
            label=f"training video head{' and top' if tuned else ''} ({options.backbone}, k={options.k_frames})",
        )
    if not distributed.is_main():  # rank 0 evaluates and writes the bundle; the others wait for its summary
        return distributed.from_main(None)
    test_report, _ = evaluate_video(model, head_inputs("test"), test_clips, classes)
    val_report, _ = evaluate_video(model, head_inputs("val"), val_clips, classes)
    if tuned:
        tuned.fold()  # the bundle's frame network is the plain trunk + head, its top convolution retrained
    name = f"{options.backbone}-{'imagenet' if options.pretrained else 'random'}-k{options.k_frames}"
    name += "-zero-shot" if options.zero_shot else "-prior" if options.imagenet_prior else ""
    name += "".join(f"-{style}" for style in options.picture_styles)
    name += f"-mixup{options.mixup:g}" if options.mixup else ""
    name += "-trainval" if "val" in options.train_splits else ""
    name += "-top" if tuned else ""
    reports = options.out / "reports"
    if result.history:
        plot_curves(result.history, reports / f"video_{name}_curves.png", f"video {name}")
    plot_confusions(
        {f"video {name} (test)": np.array(test_report["confusion"])}, classes, reports / f"video_{name}_confusion.png"
    )
    training = {
        "data": str(options.data),
        "independent_sources": training_sources(options.data),
        "setup": name,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_seconds": round(result.seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "n_train": len(train_clips),
        "train_splits": list(options.train_splits),
        "k_frames": options.k_frames,
        "trunk": (
            f"top convolution fine-tuned (step {TOP_STEP:g}, decayed towards ImageNet's weights), blocks below frozen"
            if tuned
            else "frozen (features cached), head trained"
        ),
        "imagenet_prior": bool(prior),
        "picture_styles": list(options.picture_styles),
        "mixup": options.mixup,
        "zero_shot": options.zero_shot,
        "validation": f"{options.val_data or options.data} (val split)",
        "options": asdict(options.fit),
        "history": result.history,
    }
    bundle = Bundle.create(options.out, classes)
    bundle.save_network(
        options.bundle_name,
        model,
        options.backbone,
        dims.to_dict(),
        {"frames": FrameConfig().to_dict()},
        metrics={"test": test_report, "val": val_report},
        training=training,
    )
    record_training_data(bundle, options.data)
    summary = {
        "setup": name,
        "test": {k: test_report[k] for k in ("n", "hit1", "hit3", "f1_macro")},
        "val_f1": val_report["f1_macro"],
        "train_seconds": training["train_seconds"],
    }
    (reports / f"video_{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return distributed.from_main(summary)
