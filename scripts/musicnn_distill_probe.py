"""Can our audio network learn what musicnn knows? (docs/results.md, "musicnn's embedding")

Fine-tunes the bundled audio network as the shipped recipe does (every waveform lever, learning rate 3e-4, a
background share of 0.3) with a distillation term: the KL divergence from the teacher, the geometric mix at share
0.4 of the bundled network and scripts/musicnn_probe.py's linear probe on musicnn's embedding (weight decay 1e-3,
the probe's choice on val), computed on the same augmented windows. Prints field-dev audio F1 after each epoch (val
raw; val and test with class offsets refitted on val). A measurement, not a training command: nothing is written.

    .venv/bin/python scripts/musicnn_distill_probe.py CORPUS FIELD_DEV [--weight 1.0] [--epochs 3]

About 8 minutes for the probe, then 4-5 minutes per epoch on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from streamrec.core.audio_setup import AudioSetup
from streamrec.core.bundle import Bundle
from streamrec.core.dataset import encode_targets
from streamrec.core.features import LogMel
from streamrec.core.models.audio import AudioDims, build_audio_model
from streamrec.core.models.tagger import SAMPLE_RATE, MusicnnFrontend
from streamrec.train.audio_data import audio_clips, balanced_indices, random_windows
from streamrec.train.augment import LEVERS, WaveAugment
from streamrec.train.background import BackgroundSource
from streamrec.train.metrics import classification_report
from streamrec.train.musicnn import load_musicnn
from streamrec.train.train_audio import evaluate_audio

sys.path.insert(0, str(Path(__file__).parent))
from musicnn_probe import embed, probe_fitted, recalibrated, window_embeddings  # noqa: E402  (the probe's own definitions)

SHARE = 0.4  # musicnn's share of the teacher, the probe's choice on val
BATCH, BACKGROUND_ROWS, CROPS = 32, 10, 4  # the shipped recipe: batch 32, background share 0.3, 4 crops a clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("field_dev", type=Path)
    parser.add_argument("--weight", type=float, default=1.0, help="weight of the distillation term")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)

    bundle = Bundle.load(None)  # the bundled model
    entry = bundle.network("audio")
    setup = AudioSetup.from_dict(entry["setup"])
    classes, n = bundle.classes, len(bundle.classes)
    student, teacher = (build_audio_model(AudioDims.from_dict(entry["dims"])) for _ in range(2))
    for net in (student, teacher):
        net.load_state_dict(bundle.load_checkpoint("audio")["state_dict"])
    teacher.eval()
    logmel, musicnn, frontend = LogMel(setup.frontend), load_musicnn("MTT_musicnn"), MusicnnFrontend().eval()

    train, _, _ = audio_clips(args.corpus, "train", SAMPLE_RATE, 2)
    targets, _ = encode_targets([c.record for c in train], classes)
    parts = [window_embeddings(musicnn, frontend, c.audio, setup) for c in track(train, "musicnn on the corpus")]
    x = np.concatenate(parts).astype(np.float32)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    y = np.concatenate([np.full(len(p), t) for p, t in zip(parts, targets)]).astype(np.int64)
    probe = probe_fitted((x - mean) / std, y, n, 1e-3).eval()

    val, _, _ = audio_clips(args.field_dev, "val", SAMPLE_RATE, 2)
    test, _, _ = audio_clips(args.field_dev, "test", SAMPLE_RATE, 2)
    val_t, _ = encode_targets([c.record for c in val], classes)
    test_t, _ = encode_targets([c.record for c in test], classes)

    def field_f1() -> str:
        _, on_val = evaluate_audio(student, logmel, setup, val, classes)
        _, on_test = evaluate_audio(student, logmel, setup, test, classes)
        scores, t = np.concatenate([on_val, on_test]), np.concatenate([val_t, test_t])
        is_val = np.arange(len(t)) < len(val_t)
        calibrated = recalibrated(scores, is_val, t)

        def f1(p: np.ndarray, rows: np.ndarray) -> float:
            return classification_report(p[rows].astype(np.float32), t[rows], classes)["f1_macro"]

        offsets = f"val {f1(calibrated, is_val):.3f} test {f1(calibrated, ~is_val):.3f}"
        return f"raw val {f1(scores, is_val):.3f}, with offsets {offsets}"

    print(f"epoch 0 (the bundled network): {field_f1()}", flush=True)
    augment, background = WaveAugment(LEVERS, SAMPLE_RATE), BackgroundSource(SAMPLE_RATE)
    window = setup.frontend.window_samples
    optimiser = torch.optim.Adam(student.parameters(), lr=3e-4)
    for epoch in range(1, args.epochs + 1):
        student.train()
        rng, started = np.random.default_rng([0, epoch]), time.monotonic()
        order = balanced_indices(targets, len(train) * CROPS, rng)
        for start in range(0, len(order), BATCH):
            chosen = order[start : start + BATCH]
            raw = random_windows(train, chosen, augment.source_samples(window), rng)
            music = augment.music(raw, window, rng, background).astype(np.float32)
            quiet = augment.background(background.windows(BACKGROUND_ROWS, window, rng), rng).astype(np.float32)
            label = torch.cat([torch.from_numpy(targets[chosen]), torch.full((BACKGROUND_ROWS,), n)])
            with torch.no_grad():
                features = logmel(torch.from_numpy(np.concatenate([music, quiet])))
                ours = torch.softmax(teacher(features[: len(chosen)]), 1)[:, :n]  # instruments, background split off
                theirs = torch.softmax(probe(torch.from_numpy((embed(musicnn, frontend, music) - mean) / std)), 1)
                mix = torch.exp((1 - SHARE) * torch.log(ours / ours.sum(1, keepdim=True) + 1e-9))
                mix = mix * torch.exp(SHARE * torch.log(theirs + 1e-9))
                mix = mix / mix.sum(1, keepdim=True)
            logits = student(features)
            distill = torch.nn.functional.kl_div(
                torch.log_softmax(logits[: len(chosen), :n], 1), mix, reduction="batchmean"
            )
            loss = torch.nn.functional.cross_entropy(logits, label) + args.weight * distill
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"epoch {epoch} ({time.monotonic() - started:.0f} s): {field_f1()}", flush=True)


if __name__ == "__main__":
    main()
