"""How a bundle's "no instrument" output holds on field-dev's held-out speech and noise recordings, one by one: the
share of 1 s windows (0.5 s hop) whose "no instrument" probability passes the bundle's gate, and what the other
windows are heard as. Each recording is set to -24 dBFS, the middle of the long clips' background levels.

.venv/bin/python scripts/background_gate.py [BUNDLE]   (default: the bundled model; needs `streamrec data field-dev`
to have fetched the held-out sources)
"""

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from streamrec.core.audio_setup import take_windows
from streamrec.core.bundle import Bundle
from streamrec.core.media import decode_audio
from streamrec.engines import load_networks
from streamrec.runtime.smoothing import SmoothingOptions
from streamrec.train.corpus.sources import field_dir

LEVEL_DB = -24.0


def main() -> None:
    bundle = Bundle.load(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    networks = load_networks(bundle.root, "torch")
    info, gate = networks.info, SmoothingOptions.of_bundle(bundle).background_max
    if not info.background:
        sys.exit(f"{bundle.root}: the audio network has no 'no instrument' output")
    n, hop = info.window_samples, info.window_samples // 2
    recordings = sorted((field_dir() / "speech").glob("*.wav")) + sorted((field_dir() / "noise").glob("*.ogg"))
    if not recordings:
        sys.exit(f"no held-out recordings in {field_dir()}: run `streamrec data field-dev` first")
    print(f"| recording | seconds | windows | gated (no instrument > {gate:g}) | the others heard as |")
    print("| --- | ---: | ---: | ---: | --- |")
    total = gated_total = 0
    for path in recordings:
        audio = decode_audio(path, info.sample_rate)
        audio = audio * 10 ** (LEVEL_DB / 20) / max(1e-9, float(np.sqrt(np.mean(np.square(audio)))))
        windows = take_windows(audio, list(range(0, max(1, len(audio) - n + 1), hop)), n)
        probabilities, _ = networks.audio(windows)
        gated = probabilities[:, -1] > gate
        heard = Counter(info.classes[i] for i in probabilities[~gated, :-1].argmax(axis=1))
        total, gated_total = total + len(windows), gated_total + int(gated.sum())
        others = ", ".join(f"{name} {count}" for name, count in heard.most_common(3))
        print(
            f"| {path.parent.name}/{path.name} | {max(len(audio), n) / info.sample_rate:.1f} | {len(windows)} | "
            f"{gated.mean():.2f} | {others} |"
        )
    print(f"| all | | {total} | {gated_total / total:.3f} | |")


if __name__ == "__main__":
    main()
