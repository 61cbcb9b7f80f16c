#!/usr/bin/env bash
# Reproduces the audio comparison in docs/results.md (the shape of the seed paper's Table 3):
# every architecture and crop strategy trained on one corpus with the same time budget, then the
# table. Usage: scripts/audio_experiments.sh [CORPUS] [RUNS_DIR]; MINUTES=N sets each run's budget;
# DEFAULT_BUNDLE=DIR reuses the audio network of a bundle made by `streamrec train all` as the
# real-time row instead of training it again.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-corpus}
RUNS=${2:-runs/audio}
MINUTES=${MINUTES:-12}
run() {
  local name=$1; shift
  .venv/bin/streamrec train audio --data "$CORPUS" --out "$RUNS/$name" --max-minutes "$MINUTES" "$@"
}
mkdir -p "$RUNS"
if [ -n "${DEFAULT_BUNDLE:-}" ]; then
  ln -sfn "$(realpath "$DEFAULT_BUNDLE")" "$RUNS/realtime"
else
  run realtime --arch han --frontend realtime --channels 16,32,64,128 --embedding-dim 256 --background
fi
run han --arch han
run choi-uc --arch choi --crop uc
run choi-cc --arch choi --crop cc --batch-size 16
run xception-uc --arch xception --crop uc
run attention --arch attention --batch-size 16
.venv/bin/python -m streamrec.train.report audio "$RUNS"
