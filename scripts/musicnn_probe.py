"""Does musicnn's embedding know instruments that ours does not? (docs/results.md, "musicnn's embedding")

A linear probe (multinomial logistic regression) on musicnn's embedding of the bundle's own evaluation windows
(1 s at 16 kHz for the real-time network) is fitted on the corpus's train split, its weight decay chosen on the
val split of a source-disjoint set (field-dev). Its clip probabilities are then mixed with the bundle's audio
network (a weighted geometric mean; the share chosen on val), each with class offsets refitted on val as
`streamrec tune` does, and fused with the frames by the product rule (audio weight chosen on val). Printed: val
and test macro-F1 of every row, and the chosen row's per-class test F1.

    .venv/bin/python scripts/musicnn_probe.py CORPUS FIELD_DEV [--model BUNDLE] [--musicnn MTT_musicnn] [--json F]

Needs the musicnn wheel (scripts/install.sh). About 10 minutes on 2 cores, mostly the embeddings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from streamrec.core.audio_setup import AudioSetup, crop_starts, take_windows
from streamrec.core.bundle import Bundle
from streamrec.core.models.tagger import SAMPLE_RATE, Musicnn, MusicnnFrontend
from streamrec.core.scores import FusionRule
from streamrec.engines import load_networks
from streamrec.train.audio_data import audio_clips
from streamrec.train.calibration import fit_class_offsets
from streamrec.train.evaluate import AUDIO_WEIGHTS, _load_split, clip_scores
from streamrec.train.metrics import classification_report
from streamrec.train.musicnn import load_musicnn
from streamrec.train.train_tagger import fit_probe

SHARES = tuple(round(0.1 * i, 1) for i in range(11))  # musicnn's share of the audio mix
WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1)


@torch.no_grad()
def embed(net: Musicnn, frontend: MusicnnFrontend, windows: np.ndarray) -> np.ndarray:
    return net(frontend(torch.from_numpy(windows)))[0].numpy()


def window_embeddings(net, frontend, audio: np.ndarray, setup: AudioSetup) -> np.ndarray:
    n = setup.frontend.window_samples
    return embed(net, frontend, take_windows(audio, crop_starts(len(audio), n, setup), n))


def probe_fitted(x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float) -> torch.nn.Linear:
    """A linear probe fitted as `streamrec train tagger` fits the bundle's (train/train_tagger.py)."""
    probe = torch.nn.Linear(x.shape[1], n_classes)
    fit_probe(torch.from_numpy(x), torch.from_numpy(y), probe, weight_decay)
    return probe


def recalibrated(p: np.ndarray, val: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """p with class offsets fitted on the val rows, applied as the runtime applies them (rows of NaN: the clip
    lacks the modality, and stay NaN)."""
    rows = val & ~np.isnan(p).any(axis=1)
    rule = FusionRule("product", audio_offsets=fit_class_offsets(p[rows].astype(np.float32), targets[rows]))
    return rule.calibrate("audio", p).astype(np.float64)


def fused_scores(rule: FusionRule, audio: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """rule.product per clip; a NaN row is a missing modality."""

    def present(row: np.ndarray) -> np.ndarray | None:
        return None if np.isnan(row).any() else row

    return np.stack([rule.product(present(a), present(v)) for a, v in zip(audio, frames)]).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("field_dev", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--musicnn", default="MTT_musicnn")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    bundle = Bundle.load(args.model)  # None: the bundled model
    classes = bundle.classes
    setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
    if setup.frontend.sample_rate != SAMPLE_RATE:
        raise SystemExit(f"the bundle's audio runs at {setup.frontend.sample_rate} Hz; musicnn needs {SAMPLE_RATE}")
    torch.set_num_threads(2)
    net, frontend = load_musicnn(args.musicnn), MusicnnFrontend().eval()

    train, _, _ = audio_clips(args.corpus, "train", SAMPLE_RATE, 2)
    index = {name: i for i, name in enumerate(classes)}
    parts = [window_embeddings(net, frontend, c.audio, setup) for c in track(train, "musicnn on the corpus")]
    x = np.concatenate(parts).astype(np.float32)
    y = np.concatenate([np.full(len(p), index[c.record.label]) for p, c in zip(parts, train)]).astype(np.int64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6

    nets = load_networks(bundle.root, "onnxruntime")
    rows: dict[str, list] = {"audio": [], "video": [], "musicnn": [], "target": [], "split": []}
    nan = np.full(len(classes), np.nan)
    for split in ("val", "test"):
        loaded = _load_split(args.field_dev, split, bundle, nets, 2)
        targets, _ = loaded.targets()
        for clip, target in track(list(zip(loaded.clips, targets)), f"field-dev {split}"):
            scores = clip_scores(nets, setup, clip, FusionRule.default(False))
            rows["audio"].append(nan if scores["audio"] is None else scores["audio"])
            rows["video"].append(nan if scores["video"] is None else scores["video"])
            has_audio = clip.audio is not None
            rows["musicnn"].append(window_embeddings(net, frontend, clip.audio, setup) if has_audio else None)
            rows["target"].append(target)
            rows["split"].append(split)
    t, split_of = np.array(rows["target"]), np.array(rows["split"])
    val, test = split_of == "val", split_of == "test"
    audio, video = np.array(rows["audio"], np.float64), np.array(rows["video"], np.float64)

    def f1(p: np.ndarray, where: np.ndarray) -> float:
        ok = where & ~np.isnan(p).any(axis=1)
        return float(classification_report(p[ok].astype(np.float32), t[ok], classes)["f1_macro"])

    def probe_scores(probe: torch.nn.Linear) -> np.ndarray:
        out = np.full((len(t), len(classes)), np.nan)
        with torch.no_grad():
            for i, e in enumerate(rows["musicnn"]):
                if e is not None:
                    out[i] = torch.softmax(probe(torch.from_numpy((e - mean) / std)), 1).mean(0).numpy()
        return out

    probes = {}
    for wd in WEIGHT_DECAYS:
        scores = probe_scores(probe_fitted((x - mean) / std, y, len(classes), wd))
        probes[wd] = (f1(recalibrated(scores, val, t), val), scores)
        print(f"probe, weight decay {wd:g}: val F1 {probes[wd][0]:.3f} (with offsets)")
    chosen_wd = max(probes, key=lambda wd: probes[wd][0])
    probe = recalibrated(probes[chosen_wd][1], val, t)
    ours, frames = recalibrated(audio, val, t), recalibrated(video, val, t)

    table = []
    for share in SHARES:
        mix = np.exp((1 - share) * np.log(ours + 1e-9) + share * np.log(probe + 1e-9))
        mix = recalibrated(mix / mix.sum(axis=1, keepdims=True), val, t)
        fused = {w: fused_scores(FusionRule("product", w), mix, frames) for w in AUDIO_WEIGHTS}
        weight = max(AUDIO_WEIGHTS, key=lambda w: f1(fused[w], val))
        table.append({
            "share": share, "audio_val": f1(mix, val), "audio_test": f1(mix, test), "audio_weight": weight,
            "fusion_val": f1(fused[weight], val), "fusion_test": f1(fused[weight], test), "mix": mix,
            "fused": fused[weight],
        })  # fmt: skip
    print(f"\nprobe weight decay {chosen_wd:g} (chosen on val)")
    print(f"frames alone, val / test: {f1(frames, val):.3f} / {f1(frames, test):.3f}")
    print("| musicnn share | audio F1 val / test | fusion F1 val / test (audio weight) |\n| --- | --- | --- |")
    for r in table:
        print(
            f"| {r['share']:.1f} | {r['audio_val']:.3f} / {r['audio_test']:.3f} | "
            f"{r['fusion_val']:.3f} / {r['fusion_test']:.3f} ({r['audio_weight']:g}) |"
        )
    best = max(table, key=lambda r: r["audio_val"])  # the share is chosen on val audio F1
    print(f"\nchosen on val audio F1: share {best['share']:.1f}; per-class test F1 (ours alone -> mixed):")
    alone = table[0]
    for modality in ("mix", "fused"):
        ok_a = test & ~np.isnan(alone[modality]).any(axis=1)
        ok_b = test & ~np.isnan(best[modality]).any(axis=1)
        a = classification_report(alone[modality][ok_a].astype(np.float32), t[ok_a], classes)["per_class_f1"]
        b = classification_report(best[modality][ok_b].astype(np.float32), t[ok_b], classes)["per_class_f1"]
        print(modality, ", ".join(f"{c} {a[c]:.2f}->{b[c]:.2f}" for c in a))
    if args.json:
        keep = [{k: v for k, v in r.items() if k not in ("mix", "fused")} for r in table]
        summary = {"weight_decay": chosen_wd, "rows": keep, "chosen_share": best["share"]}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
