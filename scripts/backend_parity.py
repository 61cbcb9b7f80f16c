"""Compares two inference backends clip by clip on a dataset split: top-1 agreement, largest score
difference and macro F1 per modality (the engines issue's parity check).

    .venv/bin/python scripts/backend_parity.py corpus [--model DIR] [--backend onnxruntime] [--split test]
"""

from __future__ import annotations

import argparse

import numpy as np

from streamrec.core.audio_setup import AudioSetup
from streamrec.core.bundle import Bundle
from streamrec.core.dataset import DecodeSpec, encode_targets, load_dataset
from streamrec.core.scores import FusionRule
from streamrec.engines import load_networks
from streamrec.train.evaluate import MODALITIES, clip_scores
from streamrec.train.metrics import classification_report

NETWORK = FusionRule("network")  # the fusion network's own output is what is compared, whatever the bundle's rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--model")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--reference", default="torch")
    parser.add_argument("--split", default="test")
    parser.add_argument("--precision", default="fp32", help="precision of --backend's engines (fp32, int8, ...)")
    args = parser.parse_args()
    bundle = Bundle.load(args.model)
    setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
    nets = {args.reference: load_networks(bundle.root, args.reference)}
    if args.precision == "fp32":
        nets[args.backend] = load_networks(bundle.root, args.backend)
    else:
        from streamrec.engines.networks import EngineNetworks

        nets[args.backend] = EngineNetworks(bundle, args.backend, args.precision)
    info = nets[args.reference].info
    data = load_dataset(
        args.dataset, split=args.split, spec=DecodeSpec(sample_rate=info.sample_rate), classes=bundle.classes
    )
    targets, _ = encode_targets([c.record for c in data.clips], bundle.classes)
    scores = {name: [clip_scores(n, setup, clip, NETWORK) for clip in data.clips] for name, n in nets.items()}
    other = f"{args.backend} {args.precision}"
    print(f"| modality | clips | top-1 agreement | max abs score difference | F1 {args.reference} | F1 {other} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for modality in MODALITIES:
        rows = [
            (a[modality], b[modality], t)
            for a, b, t in zip(scores[args.reference], scores[args.backend], targets)
            if a[modality] is not None
        ]
        a, b = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        t = np.array([r[2] for r in rows])
        agree = float(np.mean(a.argmax(1) == b.argmax(1)))
        f1a = classification_report(a, t, bundle.classes)["f1_macro"]
        f1b = classification_report(b, t, bundle.classes)["f1_macro"]
        print(f"| {modality} | {len(rows)} | {agree:.4f} | {np.abs(a - b).max():.2e} | {f1a:.4f} | {f1b:.4f} |")


if __name__ == "__main__":
    main()
