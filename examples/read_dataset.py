"""Reads a dataset in the streamrec layout and prints what each split holds.

.venv/bin/python examples/read_dataset.py corpus
"""

import sys
from collections import Counter

from streamrec.core.dataset import load_dataset
from streamrec.core.features import LOGMEL_PRESETS, logmel

if __name__ == "__main__":  # load_dataset's worker processes re-import this file
    data = load_dataset(sys.argv[1] if len(sys.argv) > 1 else "corpus", workers=2)
    print(f"{len(data.clips)} clips, {len(data.skipped)} skipped")
    for split in ("train", "val", "test"):
        counts = Counter(c.record.label for c in data.clips if c.record.split == split)
        print(f"{split:>5}: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
    first = next(c for c in data.clips if c.audio is not None)
    features = logmel(first.audio[:16000], LOGMEL_PRESETS["realtime"])
    print(f"{first.record.rel_path}: log-mel of its first second has shape {features.shape} (mel bands, frames)")
