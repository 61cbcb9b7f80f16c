#!/usr/bin/env bash
# Reproduces seed 003's comparison in docs/results.md (Taenzer et al., Figures 2 and 3): the attention
# model over five representations of the same corpus, each trained with the same time budget:
#   log-mel frames; a random, frozen embedding CNN; the embedding CNN pre-trained on the training
#   split by denoising additive Gaussian noise (Den +), by denoising multiplicative Bernoulli noise
#   (Den ⊙), and by instrument classification.
# Then the table (stdout and RUNS/seed003.md) and docs/figures/seed003_f1_per_class.png.
# Usage: scripts/seed003_experiments.sh [CORPUS] [RUNS_DIR]; MINUTES=N sets each run's budget
# (pre-training and attention alike); LOCK=FILE waits while FILE exists before each run and holds it
# during the run, for machines shared with jobs that need them quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-corpus}
RUNS=${2:-runs/seed003}
MINUTES=${MINUTES:-3.5}
LOCK=${LOCK:-}
held=""
release() { if [ -n "$held" ]; then rm -f "$LOCK"; held=""; fi; }
trap release EXIT
trap 'release; exit 130' INT TERM
acquire() {
  [ -n "$LOCK" ] || return 0
  # noclobber makes the creation atomic: whoever creates the file holds it.
  until (set -o noclobber; echo "scripts/seed003_experiments.sh ($$)" >"$LOCK") 2>/dev/null; do sleep 10; done
  held=1
}
locked() {
  acquire
  "$@" --max-minutes "$MINUTES"
  release
}
pretrain() {
  locked .venv/bin/python -m streamrec.train.seed003 pretrain "$CORPUS" "$RUNS/pretrain/$1.pt" --objective "$1"
}
# Seed 003 trains the head for 350 epochs and keeps the best on validation (no early stopping); the
# batch of 16 (not 128) gives the costlier log-mel row enough updates within a CPU budget of minutes.
attention() {
  local out=$1; shift
  locked .venv/bin/streamrec train audio --arch attention --data "$CORPUS" --out "$RUNS/$out" \
    --epochs 350 --patience 350 --lr 1e-3 --batch-size 16 "$@"
}
mkdir -p "$RUNS/pretrain"
for objective in gaussian bernoulli classification; do
  pretrain "$objective"
done
attention logmel --representation logmel
attention random --representation embedding
attention denoise-gaussian --representation embedding --embedding "$RUNS/pretrain/gaussian.pt"
attention denoise-bernoulli --representation embedding --embedding "$RUNS/pretrain/bernoulli.pt"
attention classification --representation embedding --embedding "$RUNS/pretrain/classification.pt"
.venv/bin/python -m streamrec.train.seed003 report "$RUNS" --figures docs/figures | tee "$RUNS/seed003.md"
