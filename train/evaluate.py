"""`streamrec eval DATASET`: audio-only, frame-only and fused metrics of a model bundle on any dataset
in the layout of docs/dataset.md, as the eval JSON described there and one figure of confusion matrices.

Inference goes through streamrec.runtime.recognizer's `Networks`, the interface the live runtime uses, so
every backend (torch, ONNX Runtime, TensorRT) is evaluated by the same code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.core.audio_setup import AudioSetup, crop_starts, instrument_probabilities, take_windows
from streamrec.core.bundle import Bundle
from streamrec.core.dataset import Clip, DecodeSpec, LoadedDataset, load_dataset
from streamrec.core.errors import UserError
from streamrec.core.networks import Networks
from streamrec.core.scores import FusionRule, fusion_inputs, spread_indices
from streamrec.engines import load_networks
from streamrec.train.calibration import fit_class_offsets
from streamrec.train.metrics import classification_report, plot_confusions

MODALITIES = ("audio", "video", "fusion")


def clip_scores(nets: Networks, setup: AudioSetup | None, clip: Clip, rule: FusionRule) -> dict[str, np.ndarray | None]:
    """(classes,) probabilities of one clip per modality: audio = mean over its evaluation windows (mixed with
    the tagger's mean over the same windows where the bundle has one), video = mean over its frames, both
    recalibrated by `rule`'s class offsets; network = the fusion network on every audio window with k evenly
    spread frames, averaged; fusion = what `rule` makes of them (the network's, or the product of audio and
    video); tagger = the tagger's own mean, unmixed (None without one)."""
    info = nets.info
    audio = video = tagger = None
    audio_embeddings = frame_embeddings = None
    if clip.audio is not None and info.has_audio and setup is not None:
        n = info.window_samples
        windows = take_windows(clip.audio, crop_starts(len(clip.audio), n, setup), n)
        probabilities, audio_embeddings = nets.audio(windows)
        audio = instrument_probabilities(probabilities, setup).mean(axis=0)
        if info.has_tagger:
            tagger = nets.tagger(windows).mean(axis=0)
    if clip.frames is not None and info.has_video:
        probabilities, embeddings = nets.frames(clip.frames)
        video = probabilities.mean(axis=0)
        frame_embeddings = embeddings[spread_indices(len(embeddings), info.k_frames)]
    network = None
    if info.has_fusion and (audio_embeddings is not None or frame_embeddings is not None):
        inputs = fusion_inputs(audio_embeddings, frame_embeddings, info.k_frames, info.audio_dim, info.video_dim)
        network = nets.fuse(*inputs).mean(axis=0)
    scores = calibrated(rule, {"audio": audio, "video": video, "network": network, "tagger": tagger})
    return {**scores, "fusion": fused(rule, scores)}


def fused(rule: FusionRule, scores: dict[str, np.ndarray | None]) -> np.ndarray | None:
    """A clip's fused probabilities under `rule`, from clip_scores' audio, video and network entries."""
    if rule.kind == "network":
        return scores["network"]
    if scores["audio"] is None and scores["video"] is None:
        return None
    return rule.product(scores["audio"], scores["video"])


def evaluate(
    data: Path,
    model: Path | None = None,
    split: str = "test",
    modalities: tuple[str, ...] = MODALITIES,
    backend: str = "torch",
    workers: int = 2,
    plot: Path | None = None,
    triton_url: str | None = None,
    precision: str = "fp32",
) -> dict:
    """The eval JSON (docs/dataset.md). `n` counts the clips that have that modality; fusion covers every clip."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown or not modalities:
        named = ", ".join(sorted(unknown)) or "(none)"
        raise UserError(f"unknown modality {named}; choose from {', '.join(MODALITIES)}")
    bundle = Bundle.load(model)
    rule = FusionRule.from_manifest(bundle.manifest, bundle.has("fusion"))
    # fusion by the product of experts needs no fusion network, only both modalities' networks
    missing = [m for m in modalities if not bundle.has(m) and not (m == "fusion" and rule.kind == "product")]
    if missing:
        raise UserError(f"bundle {bundle.root} has no {', '.join(missing)} network")
    # triton_url: backend "triton"'s server; an INT8 engine not qualified for this CPU is refused (one line)
    nets = load_networks(bundle.root, backend, precision=precision, triton_url=triton_url)
    setup = AudioSetup.from_dict(bundle.network("audio")["setup"]) if bundle.has("audio") else None
    loaded = _load_split(data, split, bundle, nets, workers)
    targets, _ = loaded.targets()
    classes = bundle.classes
    result: dict = {
        "classes": list(classes),
        "dataset": str(data),
        "split": split,
        "model": str(bundle.root),
        "backend": backend,
        "precision": precision,
        "fusion_rule": rule.to_dict(),
        "skipped": [asdict(s) for s in loaded.skipped],
    }
    scores = [clip_scores(nets, setup, clip, rule) for clip in loaded.clips]
    for modality in modalities:
        rows = [(s[modality], t) for s, t in zip(scores, targets) if s[modality] is not None]
        matrix = np.stack([r[0] for r in rows]) if rows else np.zeros((0, len(classes)))
        result[modality] = classification_report(matrix, np.array([r[1] for r in rows], dtype=np.int64), classes)
    if plot is not None:
        plot_confusions(
            {m: np.array(result[m]["confusion"]) for m in modalities},
            classes,
            plot,
            title=f"{bundle.root.name} on {Path(data).name} ({split}, {backend})",
        )
    return json_safe(result)


def _load_split(data: Path, split: str, bundle: Bundle, nets: Networks, workers: int) -> LoadedDataset:
    """One split of a dataset decoded for the bundle's networks; an empty one is a one-line error."""
    spec = DecodeSpec(sample_rate=nets.info.sample_rate, frames=nets.info.frames)
    loaded = load_dataset(data, split=split, spec=spec, classes=bundle.classes, workers=workers)
    if not loaded.clips:
        # Metrics of nothing are not numbers: an empty split is a mistake (a wrong --split or dataset), not a result.
        raise UserError(
            f"no usable clips in split {split!r} of {data}"
            + (f" ({len(loaded.skipped)} rows skipped, reasons above)" if loaded.skipped else "")
        )
    return loaded


AUDIO_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, 10))  # the product's audio weights `streamrec tune` tries
TAGGER_SHARES = tuple(round(0.1 * i, 1) for i in range(11))  # the tagger's shares of the audio it tries
# Fused val F1 within this of the best counts as equal when choosing the tagger's share: about what one of field-dev's
# 195 val clips changing class moves macro-F1 by (13 classes of 15 clips).
SHARE_TOLERANCE = 0.005


def choose_fusion_rule(
    data: Path, bundle: Bundle, nets: Networks, split: str = "val", workers: int = 2, class_offsets: bool = True
) -> tuple[FusionRule, dict[str, float]]:
    """The fusion rule with the highest macro-F1 on one split of a dataset (the val split of a source-disjoint
    set: `streamrec tune`): the fusion network, if the bundle has one, or the product of experts at each of
    AUDIO_WEIGHTS. With `class_offsets`, each modality's class offsets are first fitted on the same clips
    (train/calibration.py) and every candidate uses them. Ties keep the network. For a bundle with a tagger every
    candidate is tried at each of TAGGER_SHARES, the tagger's share of the audio (offsets fitted for each share),
    and the smallest share whose best fused F1 is within SHARE_TOLERANCE of the best is kept: shares 0.3 to 0.7
    fused the shipped bundle's val clips equally well (0.918-0.923), and the larger ones lean more on a tagger that
    hears some violins as harmonica (on the val long clips share 0.4 missed two changes to violin that 0.3 caught;
    docs/results.md). Returns the rule and every candidate's F1 by name (and, with a tagger, the mixed audio's
    own F1 at each share)."""
    if not (bundle.has("audio") and bundle.has("video")):
        raise UserError(f"bundle {bundle.root} needs an audio and a video network to choose how to fuse them")
    setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
    loaded = _load_split(data, split, bundle, nets, workers)
    targets, _ = loaded.targets()
    raw = [clip_scores(nets, setup, clip, FusionRule.default(bundle.has("fusion"))) for clip in loaded.clips]
    classes = bundle.classes
    f1: dict[str, float] = {}

    def fitted(rule: FusionRule, modality: str) -> tuple[float, ...]:
        """The modality's class offsets fitted on the clips under `rule`'s tagger share (none: no offsets)."""
        rows = [(s, t) for s, t in zip(raw, targets) if s[modality] is not None]
        if not class_offsets or not rows:
            return ()
        probabilities = np.stack([calibrated(rule, s)[modality] for s, _ in rows])  # mixed, rule has no offsets
        return fit_class_offsets(probabilities, np.array([t for _, t in rows]))

    candidates: list[FusionRule] = []
    video_offsets = fitted(FusionRule("product"), "video")  # the tagger's share changes the audio only
    for share in TAGGER_SHARES if bundle.has("tagger") else (0.0,):
        unfitted = FusionRule("product", tagger_share=share)
        offsets = {"audio_offsets": fitted(unfitted, "audio"), "video_offsets": video_offsets}
        if bundle.has("tagger"):  # the mixed audio alone, for the report
            mixing = replace(unfitted, audio_offsets=offsets["audio_offsets"])
            rows = [(calibrated(mixing, s)["audio"], t) for s, t in zip(raw, targets) if s["audio"] is not None]
            report = classification_report(np.stack([r[0] for r in rows]), np.array([r[1] for r in rows]), classes)
            f1[f"audio alone, tagger share {share:g}"] = float(report["f1_macro"])
        candidates += ([FusionRule("network", **offsets, tagger_share=share)] if bundle.has("fusion") else []) + [
            FusionRule("product", w, **offsets, tagger_share=share) for w in AUDIO_WEIGHTS
        ]
    for rule in candidates:
        matrix = np.stack([fused(rule, calibrated(rule, s)) for s in raw])
        f1[rule_name(rule)] = float(classification_report(matrix, targets, classes)["f1_macro"])
    # Equal shares are those within SHARE_TOLERANCE of the best: the smallest of them, then its best rule (max keeps
    # the first of equals: the network).
    top = max(f1[rule_name(r)] for r in candidates)
    share = min(r.tagger_share for r in candidates if f1[rule_name(r)] >= top - SHARE_TOLERANCE)
    best = max((r for r in candidates if r.tagger_share == share), key=lambda r: f1[rule_name(r)])
    return best, f1


def calibrated(rule: FusionRule, scores: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """clip_scores' entries of an uncalibrated rule with `rule`'s tagger mix and class offsets applied to audio and
    its class offsets to video."""
    return {
        **scores,
        "audio": rule.calibrate("audio", rule.mix_audio(scores["audio"], scores.get("tagger"))),
        "video": rule.calibrate("video", scores["video"]),
    }


def rule_name(rule: FusionRule) -> str:
    name = "network" if rule.kind == "network" else f"product (audio weight {rule.audio_weight:g})"
    return f"{name}, tagger share {rule.tagger_share:g}" if rule.tagger_share else name


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (the metrics of a modality with n = 0) as None: JSON null,
    since NaN and Infinity are not JSON and strict parsers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
