#!/usr/bin/env bash
# The runs behind the models shipped in models/: teacher, one MPCViT+ search,
# KD retraining at μ = 0, 0.5, 1 (plain MPCViT: GeLU on every token) and
# μ = 0.5 with half the tokens' GeLU linearised (MPCViT+), then the Pareto
# figure, and a copy of every model into models/.
#
#   bash search/scripts/fashion-mnist.sh            # from the repository root
#
# Every step checkpoints each epoch; run the script again after an
# interruption and it resumes the step that was cut off and skips finished
# ones (a finished step has train.json in its run directory). Epoch counts
# can be overridden: TEACHER_EPOCHS, SEARCH_EPOCHS, RETRAIN_EPOCHS; and
# TEACHER_ARGS, the teacher's architecture flags (default "--dim 96 --mlp
# 192", the shipped models; empty: the trainer's dim 64 / MLP 128; the later
# steps take the architecture from the teacher). About 3 h on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-runs}
MODELS=${MODELS:-models}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-40}
TEACHER_ARGS=${TEACHER_ARGS-"--dim 96 --mlp 192"}
SEARCH_EPOCHS=${SEARCH_EPOCHS:-2}
RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-3}
# mimalloc keeps freed tensor memory (13% less CPU time); one rayon thread is
# faster than two on a machine whose other core is busy.
export MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY:--1}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

cargo build --release -p search
B=target/release/mpcvit-search

# step DIR ARGS...: run (or resume) one training step unless it finished.
step() {
  local dir=$1
  shift
  if [ -e "$dir/train.json" ]; then
    echo "== $dir: done"
    return
  fi
  local resume=()
  [ -e "$dir/checkpoint.json" ] && resume=(--resume)
  echo "== $dir: $*"
  "$B" "$@" --out "$dir" "${resume[@]}"
}

# shellcheck disable=SC2086 # TEACHER_ARGS is a list of flags
step "$RUNS/teacher" train-teacher --epochs "$TEACHER_EPOCHS" $TEACHER_ARGS
step "$RUNS/search" search --plus --init "$RUNS/teacher" --epochs "$SEARCH_EPOCHS" \
  --lr 5e-4 --warmup-epochs 0
retrain() {
  local name=$1
  shift
  step "$RUNS/$name" retrain --search "$RUNS/search" --teacher "$RUNS/teacher" \
    --epochs "$RETRAIN_EPOCHS" --lr 5e-4 --warmup-epochs 0 "$@"
}
retrain mu0.5 --mu 0.5 --beta-keep 1
retrain mu0.5-plus --mu 0.5 --beta-keep 0.5
retrain mu0 --mu 0 --beta-keep 1
retrain mu1 --mu 1 --beta-keep 1

mkdir -p "$MODELS"
for run in teacher mu0 mu0.5 mu1 mu0.5-plus; do
  name=fashion-mnist-$run
  [ "$run" = teacher ] && name=fashion-mnist-softmax
  "$B" export --checkpoint "$RUNS/$run" --out "$MODELS/$name" --name "$name"
  cp "$RUNS/$run/train.json" "$MODELS/$name/"
done
"$B" pareto \
  --model "$MODELS/fashion-mnist-softmax" --model "$MODELS/fashion-mnist-mu0" \
  --model "$MODELS/fashion-mnist-mu0.5" --model "$MODELS/fashion-mnist-mu1" \
  --model "$MODELS/fashion-mnist-mu0.5-plus" \
  --svg "$MODELS/pareto.svg" --json "$MODELS/pareto.json" | tee "$RUNS/pareto.out"
grep '^|' "$RUNS/pareto.out" > "$MODELS/pareto.md"
