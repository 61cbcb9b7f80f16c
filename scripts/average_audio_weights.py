"""Averages the audio networks of bundles fine-tuned from one starting point, weight by weight (a "model soup"),
into a copy of the first bundle: the weight averages of docs/results.md (2026-12-05). Run `streamrec tune` on the
result before evaluating it: the class offsets belong to the audio network they were fitted for.

    .venv/bin/python scripts/average_audio_weights.py OUT BUNDLE BUNDLE [BUNDLE...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from streamrec.core.bundle import Bundle
from streamrec.core.models import load_network

# The manifest entry's fields that Bundle.save_network writes itself; the others are the network's settings.
WRITTEN_BY_SAVE = {"arch", "dims", "weights", "sha256", "parameters", "metrics", "training"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("bundles", type=Path, nargs="+")
    args = parser.parse_args()
    members = [Bundle.load(path) for path in args.bundles]
    networks = [load_network(member, "audio") for member in members]
    states = [network.state_dict() for network in networks]
    if any(
        state.keys() != states[0].keys() or member.network("audio")["dims"] != members[0].network("audio")["dims"]
        for state, member in zip(states, members, strict=True)
    ):
        raise SystemExit("the audio networks differ in shape: only networks fine-tuned from one start average")
    # Counters (BatchNorm's num_batches_tracked) are not weights: the first bundle's are kept.
    averaged = {
        name: sum(state[name] for state in states) / len(states) if value.is_floating_point() else value
        for name, value in states[0].items()
    }
    networks[0].load_state_dict(averaged)
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(members[0].root, args.out, ignore=shutil.ignore_patterns("engines"))
    bundle = Bundle.load(args.out)
    entry = bundle.network("audio")
    settings = {k: v for k, v in entry.items() if k not in WRITTEN_BY_SAVE}
    training = {**entry.get("training", {}), "averaged_from": [str(path) for path in args.bundles]}
    bundle.save_network("audio", networks[0], entry["arch"], entry["dims"], settings, entry.get("metrics"), training)
    print(f"wrote {args.out}: the audio weights of {len(members)} bundles averaged")


if __name__ == "__main__":
    main()
