#!/usr/bin/env bash
# The augmentation ablation of docs/results.md: the base audio network (BASE, the bundle before augmentation
# existed) fine-tuned under one short protocol with every waveform lever of train/augment.py, with none, and
# with each lever left out; every run's epoch chosen on field-dev's val split, its audio F1 then measured on
# field-dev's test split. scripts/field_report.py RUNS all none no-pitch ... prints the table.
# Short on purpose (3 epochs of 2 windows per clip, about 6 minutes a run on 2 cores): the levers are compared
# with each other under the same budget, not with the shipped bundle's longer fine-tuning.
# Usage: BASE=BUNDLE scripts/ablate_levers.sh [CORPUS] [FIELD_DEV] [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-corpus}
FIELD=${2:-field-dev}
RUNS=${3:-runs/ablation}
S=.venv/bin/streamrec
LEVERS=(pitch eq room dynamics mix)
mkdir -p "$RUNS"

run() {  # NAME AUGMENT
  rm -rf "${RUNS:?}/$1"
  $S train audio --data "$CORPUS" --val-data "$FIELD" --out "$RUNS/$1" --arch han --frontend realtime \
    --channels 16,32,64,128 --embedding-dim 256 --background --init "${BASE:?set BASE to the bundle to fine-tune}" \
    --lr 3e-4 --epochs 3 --patience 3 --crops-per-clip 2 --augment "$2"
  $S eval "$FIELD" --model "$RUNS/$1" --modality audio --json "$RUNS/$1.field.json"
}

run all all
run none none
for lever in "${LEVERS[@]}"; do
  rest=$(printf '%s\n' "${LEVERS[@]}" | grep -vx "$lever" | paste -sd, -)
  run "no-$lever" "$rest"
done
