#!/usr/bin/env bash
# Reproduces the frame and fusion comparisons in docs/results.md (the shapes of the seed paper's
# Tables 2 and 4) from a corpus and the default bundle trained on it by `streamrec train all`.
# Usage: scripts/frame_fusion_experiments.sh [CORPUS] [DEFAULT_BUNDLE] [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-corpus}
DEFAULT=${2:-runs/default}
RUNS=${3:-runs}
for k in 2 5; do
  .venv/bin/streamrec train video --data "$CORPUS" --out "$RUNS/video/imagenet-k$k" -k "$k" --epochs 30
done
.venv/bin/streamrec train video --data "$CORPUS" --out "$RUNS/video/random-k10" -k 10 --no-pretrained --epochs 30
rm -rf "$RUNS/fusion-joint" && mkdir -p "$RUNS/fusion-joint"
cp "$DEFAULT"/manifest.json "$DEFAULT"/*.pt "$RUNS/fusion-joint/"
.venv/bin/streamrec train fusion --data "$CORPUS" --out "$RUNS/fusion-joint" --scheme joint --epochs 30
