"""INT8 qualification of a bundle's networks on this CPU: macro F1 of ONNX Runtime INT8 against FP32 on a
dataset split, one network quantized at a time (audio F1 isolates the audio network, video F1 the frame
network, fusion F1 with FP32 embeddings the fusion network), plus all three INT8 together.

    .venv/bin/python scripts/int8_qualify.py /work/data/corpus --split test [--model DIR] [--json FILE]

A network qualifies on a CPU family when |F1 int8 - F1 fp32| <= INT8_F1_TOLERANCE on every dataset measured;
the result goes by hand into engines/onnxruntime_engine.py INT8_QUALIFIED and docs/engines.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from streamrec.core.audio_setup import AudioSetup
from streamrec.core.bundle import Bundle
from streamrec.core.dataset import DecodeSpec, encode_targets, load_dataset
from streamrec.core.networks import NetworkInfo
from streamrec.core.scores import FusionRule
from streamrec.engines import EngineNetworks, EngineOptions
from streamrec.engines.onnxruntime_engine import INT8_F1_TOLERANCE, cpu_family, runtime_version
from streamrec.train.evaluate import MODALITIES, clip_scores
from streamrec.train.metrics import classification_report

NETWORK = FusionRule("network")  # the fusion network's own output is what is compared, whatever the bundle's rule


class Mixed:
    """The Networks protocol with each network taken from either of two EngineNetworks."""

    def __init__(self, audio: EngineNetworks, video: EngineNetworks, fusion: EngineNetworks) -> None:
        self.info: NetworkInfo = audio.info
        self.audio, self.frames, self.fuse = audio.audio, video.frames, fusion.fuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    bundle = Bundle.load(args.model)
    setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
    fp32 = EngineNetworks(bundle, "onnxruntime", "fp32", EngineOptions(threads=1))
    int8 = EngineNetworks(bundle, "onnxruntime", "int8", EngineOptions(threads=1, int8_unqualified=True))
    variants = {"fp32": fp32, "int8 (all three)": int8, "int8 fusion only": Mixed(fp32, fp32, int8)}
    info = fp32.info
    start = time.monotonic()
    data = load_dataset(
        args.dataset,
        split=args.split,
        spec=DecodeSpec(sample_rate=info.sample_rate, frames=info.frames),
        classes=bundle.classes,
        workers=args.workers,
    )
    targets, _ = encode_targets([c.record for c in data.clips], bundle.classes)
    f1: dict[str, dict[str, float]] = {}
    for name, nets in variants.items():
        scores = [clip_scores(nets, setup, clip, NETWORK) for clip in data.clips]  # type: ignore[arg-type]
        f1[name] = {}
        for modality in MODALITIES:
            rows = [(s[modality], t) for s, t in zip(scores, targets) if s[modality] is not None]
            if rows:
                matrix = np.stack([r[0] for r in rows])
                report = classification_report(matrix, np.array([r[1] for r in rows]), bundle.classes)
                f1[name][modality] = float(report["f1_macro"])
    # Which variant isolates which network: see the module docstring.
    isolated = {
        "audio": ("int8 (all three)", "audio"),
        "video": ("int8 (all three)", "video"),
        "fusion": ("int8 fusion only", "fusion"),
    }
    result = {
        "dataset": args.dataset,
        "split": args.split,
        "clips": len(data.clips),
        "cpu_family": cpu_family(),
        "onnxruntime": runtime_version(),
        "f1": f1,
        "networks": {},
        "seconds": round(time.monotonic() - start, 1),
    }
    print(f"{args.dataset} ({args.split}, {len(data.clips)} clips), CPU family {cpu_family()}, ORT {runtime_version()}")
    print("| network | F1 fp32 | F1 int8 | difference | qualifies |")
    print("| --- | ---: | ---: | ---: | --- |")
    for network, (variant, modality) in isolated.items():
        a, b = f1["fp32"].get(modality), f1[variant].get(modality)
        if a is None or b is None:
            continue
        ok = abs(b - a) <= INT8_F1_TOLERANCE
        result["networks"][network] = {"f1_fp32": a, "f1_int8": b, "difference": b - a, "qualifies": ok}
        print(f"| {network} | {a:.4f} | {b:.4f} | {b - a:+.4f} | {'yes' if ok else 'no'} |")
    both = f1["int8 (all three)"].get("fusion")
    if both is not None:
        ref = f1["fp32"]["fusion"]
        print(f"| all three INT8 (fused) | {ref:.4f} | {both:.4f} | {both - ref:+.4f} | |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
