"""Results tables for docs/results.md, from trained bundles: `python -m streamrec.train.report audio RUNS_DIR`."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from streamrec.core.audio_setup import AudioSetup, instrument_probabilities, window_probabilities
from streamrec.core.bundle import Bundle
from streamrec.core.dataset import DecodeSpec, load_dataset
from streamrec.core.models import load_network
from streamrec.core.models.audio import AudioDims, build_audio_model
from streamrec.train.metrics import classification_report
from streamrec.train.train_fusion import Extractors, clip_inputs, fused_probabilities
from streamrec.train.train_video import frame_probabilities


def multiply_adds(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-adds of one forward pass (torch's FLOP counter counts 2 FLOPs per multiply-add)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops() // 2


def latency_ms(model: torch.nn.Module, example: torch.Tensor, repeats: int = 20) -> float:
    """Median wall time of one forward pass, after warm-up, with torch's current thread count."""
    with torch.no_grad():
        for _ in range(3):
            model(example)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(example)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def audio_rows(runs: Path) -> list[dict]:
    rows = []
    for manifest in sorted(runs.glob("*/manifest.json")):
        bundle = Bundle.load(manifest.parent)
        if not bundle.has("audio"):
            continue
        entry = bundle.network("audio")
        setup = AudioSetup.from_dict(entry["setup"])
        dims = AudioDims.from_dict(entry["dims"])
        model = build_audio_model(dims).eval()
        seconds = (
            setup.frontend.window_seconds if setup.crop == "uniform" else min(setup.frontend.window_seconds, 10.0)
        )  # a central crop of a 10 s corpus clip is the whole clip
        frames = 1 + round(seconds * setup.frontend.sample_rate) // setup.frontend.hop_length
        example = torch.randn(1, setup.frontend.n_mels, frames)
        test, training = entry["metrics"]["test"], entry["training"]
        rows.append(
            {
                "name": manifest.parent.name,
                "setup": setup,
                "params": entry["parameters"],
                "macs_per_second": multiply_adds(model, example) / seconds,
                "latency_ms": latency_ms(model, example),
                "window_s": seconds,
                "test": test,
                "epochs": training["epochs"],
                "best_epoch": training["best_epoch"],
                "minutes": training["train_seconds"] / 60,
                "stopped": training["stopped"],
            }
        )
    return rows


def audio_table(rows: list[dict]) -> str:
    lines = [
        "| run | architecture | crop | front end | #params | M mult-adds / s audio | CPU ms / window (torch, batch 1) "
        "| Hit@1 | Hit@3 | F1 | F1@0.5 multi-label | mAP | epochs (best) | train min |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        s, t, fe = r["setup"], r["test"], r["setup"].frontend
        crop = f"{'UC' if s.crop == 'uniform' else 'CC'} ({s.n_crops} x {r['window_s']:g} s)"
        lines.append(
            f"| {r['name']} | {s.arch} | {crop} | {fe.n_mels} mel, {fe.sample_rate / 1000:g} kHz, "
            f"{fe.n_fft}/{fe.hop_length} | {r['params'] / 1e6:.2f}M | {r['macs_per_second'] / 1e6:.0f} | "
            f"{r['latency_ms']:.1f} | {t['hit1']:.3f} | {t['hit3']:.3f} | {t['f1_macro']:.3f} | "
            f"{t.get('f1_macro_at_0.5', float('nan')):.3f} | {t.get('map', float('nan')):.3f} | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['minutes']:.1f} |"
        )
    return "\n".join(lines)


def video_table(runs: Path) -> str:
    """Frame-only results per backbone, pretraining and k (the seed paper's Table 2)."""
    lines = [
        "| run | backbone | ImageNet | k frames / clip | Hit@1 | Hit@3 | F1 | epochs (best) | train min |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for manifest in sorted(runs.glob("*/manifest.json")):
        bundle = Bundle.load(manifest.parent)
        if not bundle.has("video"):
            continue
        entry = bundle.network("video")
        t, tr = entry["metrics"]["test"], entry["training"]
        lines.append(
            f"| {manifest.parent.name} | {entry['arch']} | {'yes' if entry['dims']['pretrained'] else 'no'} | "
            f"{tr['k_frames']} | {t['hit1']:.3f} | {t['hit3']:.3f} | {t['f1_macro']:.3f} | "
            f"{tr['epochs']} ({tr['best_epoch']}) | {tr['train_seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def fusion_tables(data: Path, bundles: list[Path]) -> str:
    """Fusion per training scheme, and with a modality removed against that modality's own network,
    on the test clips that have both streams (the seed paper's Table 4 and its missing-modality remark)."""
    lines = [
        "| bundle | fusion scheme | clips | audio network F1 | frame network F1 | fusion F1 | fusion Hit@1 | "
        "fusion, audio removed F1 | fusion, frames removed F1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in bundles:
        bundle = Bundle.load(path)
        extractors = Extractors(bundle).eval()
        fusion = load_network(bundle, "fusion")
        loaded = load_dataset(
            data,
            split="test",
            spec=DecodeSpec(sample_rate=extractors.setup.frontend.sample_rate),
            classes=bundle.classes,
            progress=False,
        )
        items = [
            it
            for it in clip_inputs(loaded.clips, extractors, bundle.classes)
            if it.windows is not None and it.trunk is not None
        ]
        targets = np.array([it.label for it in items])
        audio = np.stack(
            [
                instrument_probabilities(
                    window_probabilities(extractors.audio, extractors.logmel, it.windows), extractors.setup
                ).mean(0)
                for it in items
            ]
        )
        video = np.stack([frame_probabilities(extractors.video.head, it.trunk).mean(0) for it in items])
        runs = {
            name: np.stack([fused_probabilities(fusion, extractors, it, a, v) for it in items])
            for name, a, v in (("both", True, True), ("no_audio", False, True), ("no_frames", True, False))
        }
        f1 = {
            name: classification_report(s, targets, bundle.classes)["f1_macro"]
            for name, s in {"audio": audio, "video": video, **runs}.items()
        }
        hit1 = classification_report(runs["both"], targets, bundle.classes)["hit1"]
        lines.append(
            f"| {path.name} | {bundle.network('fusion')['scheme']} | {len(items)} | {f1['audio']:.3f} | "
            f"{f1['video']:.3f} | {f1['both']:.3f} | {hit1:.3f} | {f1['no_audio']:.3f} | "
            f"{f1['no_frames']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    usage = "usage: python -m streamrec.train.report audio RUNS_DIR | video RUNS_DIR | fusion DATASET BUNDLE..."
    if len(argv) >= 2 and argv[0] == "audio":
        print(audio_table(audio_rows(Path(argv[1]))))
    elif len(argv) >= 2 and argv[0] == "video":
        print(video_table(Path(argv[1])))
    elif len(argv) >= 3 and argv[0] == "fusion":
        print(fusion_tables(Path(argv[1]), [Path(p) for p in argv[2:]]))
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main(sys.argv[1:])
