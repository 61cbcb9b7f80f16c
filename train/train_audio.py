"""`streamrec train audio`: trains one of the seeds' audio networks into a model bundle."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torchaudio

from streamrec.core.audio_setup import (
    AudioSetup,
    clip_probabilities,
    crop_starts,
    eval_window,
    take_windows,
    window_probabilities,
)
from streamrec.core.bundle import Bundle
from streamrec.core.dataset import Clip, encode_targets
from streamrec.core.errors import UserError
from streamrec.core.features import LogMel
from streamrec.core.models.audio import AudioNet, build_audio_model, default_dims, outputs_probabilities
from streamrec.train import distributed
from streamrec.train.audio_data import audio_clips, balanced_indices, random_windows
from streamrec.train.augment import WaveAugment
from streamrec.train.background import BackgroundSource, background_sources
from streamrec.train.corpus.records import training_sources
from streamrec.train.loop import FitOptions, fit, plot_curves, seed_everything
from streamrec.train.metrics import classification_report, multilabel_report, plot_confusions
from streamrec.train.pretrain import AttentionHead, batched, freeze_representation, represent_clips
from streamrec.train.provenance import record_training_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioTrainOptions:
    data: Path
    out: Path
    setup: AudioSetup
    fit: FitOptions = FitOptions()
    batch_size: int = 32
    crops_per_clip: int = 4  # random training windows drawn per clip and epoch
    specaugment: bool = False
    # Waveform levers of streamrec.train.augment (pitch, eq, room, dynamics, mix); () = the corpus as rendered.
    augment: tuple[str, ...] = ()
    # Share of each batch that is "no instrument" (background) windows, when the setup has that output.
    background_share: float = 0.2
    resume: bool = False
    workers: int = 2  # decoding processes
    channels: tuple[int, ...] | None = None  # override of the architecture's conv widths
    embedding_dim: int | None = None  # override of the penultimate size
    # Seed 003: what the attention model attends over ("joint", "logmel" or "embedding"; see
    # models.audio.REPRESENTATIONS), and for "embedding" a checkpoint of streamrec.train.pretrain (None: random).
    representation: str = "joint"
    embedding: Path | None = None
    val_data: Path | None = None  # early stopping on this dataset's val split (a source-disjoint field-dev set)
    # Start from this bundle's audio network (same architecture, front end and classes): fine-tuning, e.g. the
    # bundled model with augmentation, in a few epochs instead of a full run.
    init: Path | None = None


def evaluate_audio(
    model: AudioNet, logmel: LogMel, setup: AudioSetup, clips: list[Clip], classes: tuple[str, ...]
) -> tuple[dict, np.ndarray]:
    """The eval-JSON block of docs/dataset.md plus seed 003's multi-label metrics; and the (n, classes) scores."""
    model.eval()
    scores = (
        np.stack([clip_probabilities(model, logmel, setup, c.audio) for c in clips])
        if clips
        else np.zeros((0, len(classes)))
    )
    targets, multi_hot = encode_targets([c.record for c in clips], classes)
    report = classification_report(scores, targets, classes)
    report.update(multilabel_report(scores, multi_hot))
    return report, scores


@torch.no_grad()
def background_report(
    model: AudioNet, logmel: LogMel, setup: AudioSetup, clips: list[Clip], background: BackgroundSource, n: int = 300
) -> dict:
    """How well the background output separates music from silence, noise and speech, per window:
    recall on generated background windows and false alarms on the clips' windows (threshold 0.5)."""
    model.eval()
    window = setup.frontend.window_samples
    rng = np.random.default_rng(1234)
    on_background = window_probabilities(model, logmel, background.windows(n, window, rng))[:, -1]
    music = np.concatenate([take_windows(c.audio, crop_starts(len(c.audio), window, setup), window) for c in clips])
    on_music = np.concatenate(
        [window_probabilities(model, logmel, music[i : i + 256])[:, -1] for i in range(0, len(music), 256)]
    )
    return {
        "recall": float(np.mean(on_background > 0.5)),
        "false_alarm": float(np.mean(on_music > 0.5)),
        "n_background": n,
        "n_music_windows": int(len(music)),
    }


def _initialise(model: AudioNet, dims: dict, setup: AudioSetup, classes: tuple[str, ...], init: Path) -> None:
    """Loads another bundle's audio weights into model; a one-line error when the networks differ."""
    bundle = Bundle.load(init)
    if not bundle.has("audio"):
        raise UserError(f"--init {init}: the bundle has no audio network")
    entry = bundle.network("audio")
    wanted = json.loads(json.dumps(dims))  # tuples become lists, as stored
    # Older manifests lack dimensions added since with their defaults: compare what the entry states.
    same_dims = all(wanted.get(key) == value for key, value in entry["dims"].items())
    if bundle.classes != classes or not same_dims or entry["setup"] != json.loads(json.dumps(setup.to_dict())):
        raise UserError(f"--init {init}: its audio network differs (classes, architecture or front end)")
    model.load_state_dict(bundle.load_checkpoint("audio")["state_dict"])


def train_audio(options: AudioTrainOptions) -> dict:
    """Trains, picks the best epoch by validation F1, evaluates on test, and writes the bundle's audio network."""
    setup = options.setup
    if options.representation != "joint" and setup.arch != "attention":
        raise UserError(f"only the attention model takes a representation other than 'joint', not {setup.arch!r}")
    if options.embedding is not None and options.representation != "embedding":
        raise UserError("a pre-trained embedding needs the attention model with representation 'embedding'")
    if options.embedding is not None and not options.embedding.is_file():
        raise UserError(f"{options.embedding}: no such embedding checkpoint")
    sample_rate = setup.frontend.sample_rate
    train_clips, classes, skipped = audio_clips(options.data, "train", sample_rate, options.workers)
    val_clips, _, _ = audio_clips(options.val_data or options.data, "val", sample_rate, options.workers)
    test_clips, _, _ = audio_clips(options.data, "test", sample_rate, options.workers)
    if not train_clips or not val_clips:
        raise UserError(f"{options.data} has no training or no validation clips with audio")
    targets, multi_hot = encode_targets([c.record for c in train_clips], classes)
    present = np.unique(targets)
    if len(present) < 2:
        raise UserError(f"{options.data}: the training split has fewer than two classes with audio")

    n_outputs = len(classes) + (1 if setup.background else 0)
    dims = default_dims(setup.arch, n_outputs, setup.frontend.n_mels, options.representation)
    dims = replace(
        dims, channels=options.channels or dims.channels, embedding_dim=options.embedding_dim or dims.embedding_dim
    )
    seed_everything(options.fit.seed)  # the initial weights follow --seed too, not only the batches
    model = build_audio_model(dims)
    if options.init is not None:
        _initialise(model, dims.to_dict(), setup, classes, options.init)
    logmel = LogMel(setup.frontend)
    probabilities_out = outputs_probabilities(dims)
    masks = torch.nn.Sequential(
        torchaudio.transforms.FrequencyMasking(setup.frontend.n_mels // 8, iid_masks=True),
        torchaudio.transforms.TimeMasking(setup.frontend.frames_per_window // 10, iid_masks=True),
    )
    window = (
        eval_window(setup, min(len(c.audio) for c in train_clips))
        if setup.crop == "central"
        else setup.frontend.window_samples
    )
    crops = options.crops_per_clip if setup.crop == "uniform" else 1
    frozen = dims.representation != "joint"
    if frozen:
        # Seed 003's second stage: the representation is fixed (random or pre-trained) and scaled to [0, 1]
        # on training clips, then computed once per clip (its central crop); only the head trains, on
        # those. Imported here because streamrec.train.pretrain builds on this module.
        if options.specaugment:
            raise UserError("SpecAugment needs the representation recomputed every epoch; not with a frozen one")
        if options.augment:
            raise UserError("waveform augmentation needs the representation recomputed every epoch; not when frozen")
        freeze_representation(model, logmel, setup, train_clips, options.embedding)
        train_inputs = represent_clips(model, logmel, train_clips, window)
        val_inputs = represent_clips(model, logmel, val_clips, window)
        val_targets, _ = encode_targets([c.record for c in val_clips], classes)
    background = BackgroundSource(setup.frontend.sample_rate) if setup.background else None
    background_rows = round(options.batch_size * options.background_share) if background else 0
    augment = WaveAugment(options.augment, setup.frontend.sample_rate) if options.augment else None

    def batches(epoch: int):
        rng = np.random.default_rng([options.fit.seed, epoch])
        order = balanced_indices(targets, len(train_clips) * crops, rng)
        for start in range(0, len(order), options.batch_size):
            chosen = order[start : start + options.batch_size]
            if frozen:
                yield train_inputs[chosen], torch.from_numpy(multi_hot[chosen])
                continue
            if augment is None:
                windows = random_windows(train_clips, chosen, window, rng)
            else:
                raw = random_windows(train_clips, chosen, augment.source_samples(window), rng)
                windows = augment.music(raw, window, rng, background)
            label = torch.from_numpy(multi_hot[chosen]) if probabilities_out else torch.from_numpy(targets[chosen])
            if background is not None:
                extra = background.windows(background_rows, window, rng)
                windows = np.concatenate([windows, augment.background(extra, rng) if augment else extra])
                label = torch.cat([label, torch.full((background_rows,), len(classes), dtype=label.dtype)])
            with torch.no_grad():
                features = logmel(torch.from_numpy(windows))
                if options.specaugment:
                    features = masks(features.unsqueeze(1)).squeeze(1)
            yield features, label

    def loss_fn(outputs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if probabilities_out:  # attention model: multi-label binary cross-entropy on probabilities
            return torch.nn.functional.binary_cross_entropy(outputs.clamp(1e-6, 1 - 1e-6), label)
        return torch.nn.functional.cross_entropy(outputs, label)

    def validate() -> float:
        if frozen:
            scores = batched(model.attend, val_inputs).numpy()
            return classification_report(scores, val_targets, classes)["f1_macro"]
        return evaluate_audio(model, logmel, setup, val_clips, classes)[0]["f1_macro"]

    options.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = fit(
        AttentionHead(model) if frozen else model,
        batches,
        loss_fn,
        validate,
        options.fit,
        state_path=options.out / ".train" / "audio.pt",
        resume=options.resume,
        label=f"training audio {setup.name}",
        parameters=[p for p in model.parameters() if p.requires_grad],
    )
    if not distributed.is_main():  # rank 0 evaluates and writes the bundle; the others wait for its summary
        return distributed.from_main(None)
    test_report, _ = evaluate_audio(model, logmel, setup, test_clips, classes)
    val_report, _ = evaluate_audio(model, logmel, setup, val_clips, classes)
    if background is not None:
        test_report["background"] = background_report(model, logmel, setup, test_clips, background)
    reports = options.out / "reports"
    plot_curves(result.history, reports / f"audio_{setup.name}_curves.png", f"audio {setup.name}")
    plot_confusions(
        {f"audio {setup.name} (test)": np.array(test_report["confusion"])},
        classes,
        reports / f"audio_{setup.name}_confusion.png",
    )
    training = {
        "data": str(options.data),
        "independent_sources": training_sources(options.data),
        "validation": f"{options.val_data or options.data} (val split)",
        "setup": setup.name,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_seconds": round(result.seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "n_train": len(train_clips),
        "n_val": len(val_clips),
        "options": {
            **asdict(options.fit),
            "batch_size": options.batch_size,
            "crops_per_clip": crops,
            "specaugment": options.specaugment,
            "augment": list(options.augment),
            "background_share": options.background_share if background else None,
            "background_sources": background_sources() if background else None,
            "representation": dims.representation,
            "embedding": str(options.embedding) if options.embedding else None,
            "init": str(options.init) if options.init else None,
        },
        "history": result.history,
    }
    bundle = Bundle.create(options.out, classes)
    bundle.save_network(
        "audio",
        model,
        setup.arch,
        dims.to_dict(),
        {"setup": setup.to_dict()},
        metrics={"test": test_report, "val": val_report},
        training=training,
    )
    record_training_data(bundle, options.data)
    summary = {
        "setup": setup.name,
        "test": {k: test_report[k] for k in ("n", "hit1", "hit3", "f1_macro")},
        "background": test_report.get("background"),
        "val_f1": val_report["f1_macro"],
        "train_seconds": training["train_seconds"],
        "skipped": [asdict(s) for s in skipped],
    }
    (reports / f"audio_{setup.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return distributed.from_main(summary)
