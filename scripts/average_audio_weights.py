"""Averages the audio networks of bundles fine-tuned from one starting point, weight by weight (a "model soup"),
into a copy of the first bundle: the weight averages of docs/results.md (2026-12-05). Run `streamrec tune` on the
result before evaluating it: the class offsets belong to the audio network they were fitted for.

    .venv/bin/python scripts/average_audio_weights.py OUT BUNDLE BUNDLE [BUNDLE...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from streamrec.core.bundle import Bundle, sha256_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("bundles", type=Path, nargs="+")
    args = parser.parse_args()
    members = [Bundle.load(path) for path in args.bundles]
    checkpoints = [member.load_checkpoint("audio") for member in members]
    if any(c["dims"] != checkpoints[0]["dims"] for c in checkpoints):
        raise SystemExit("the audio networks differ in shape: only networks fine-tuned from one start average")
    first = checkpoints[0]["state_dict"]
    # Counters (BatchNorm's num_batches_tracked) are not weights: the first bundle's are kept.
    state = {
        name: sum(c["state_dict"][name] for c in checkpoints) / len(checkpoints) if value.is_floating_point() else value
        for name, value in first.items()
    }
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(members[0].root, args.out, ignore=shutil.ignore_patterns("engines"))
    torch.save({**checkpoints[0], "state_dict": state}, args.out / "audio.pt")
    bundle = Bundle.load(args.out)
    entry = bundle.manifest["networks"]["audio"]
    entry["sha256"] = sha256_of(args.out / "audio.pt")
    entry["averaged_from"] = [str(path) for path in args.bundles]
    bundle.write_manifest()
    print(f"wrote {args.out}: the audio weights of {len(members)} bundles averaged")


if __name__ == "__main__":
    main()
