#!/usr/bin/env bash
# The runs behind the models shipped in models/, as one resumable sweep:
#
#   1. teacher            all-Softmax ViT: a further cosine cycle from the shipped teacher
#   2. search-mu0.5-s1    MPCViT+ search (alpha and beta) from the teacher with a budget
#                         of μ = 0.5 (the penalty adapts until half the alphas stay up)
#                         ending in a commitment phase (alphas to 0 or 1)
#   3. mu0.5              KD retraining of its binarised mask from the search's weights
#   4. ablation-mu0.5-*   the ablation: the searched mask and K = 1..3 random masks of
#                         the same μ, each retrained from the teacher's weights with
#                         the same KD budget and seed, so that only the mask differs
#   5. search-mu0.5-s2    a second search seed; `agree` compares the kept heads
#   6. μ = 0.3: search, retraining and the ablation; μ = 0.1, 0.7: search and
#      retraining; μ = 0, 1 and MPCViT+ (half the tokens' GeLU) from the μ = 0.5 search
#   7. search-mu0.5-wan   a search chosen for the WAN: the engine's per-head and per-block
#                         latency on the WAN around mu0.5's mask (wan-cost.json, from
#                         `cost --out`) weights the penalty; mu0.5-wan retrains it
#   8. the ablation table ($RUNS/ablation.md)
#
#   bash search/scripts/fashion-mnist.sh              # from anywhere; resumes
#   SWEEP_COMMIT=1 bash search/scripts/fashion-mnist.sh   # also commits each finished step
#
# Every step checkpoints each epoch into its directory under $RUNS (in the repository,
# so it can be committed: `search/runs/fashion-mnist/`). Run the script again after an
# interruption, on this machine or a fresh clone, and it resumes the step that was cut
# off and skips finished ones (a finished step has train.json). A finished step keeps its
# exported model, train.json (and search.json), and drops its optimiser checkpoint
# unless a later step needs it (searches). With SWEEP_COMMIT=1 each finished step is
# committed on its own (git add -f $RUNS/STEP; git commit). `SWEEP_STOP_AFTER=STEP`
# stops after that step (one that runs alone). `SWEEP_JOBS=N` runs an ablation's four
# retrainings N at a time, each on RAYON_NUM_THREADS threads (for N free cores).
# Two sweeps may run at once on one checkout: each step holds a lock while it runs
# (a sweep that reaches a step another one is running waits for it, then skips it),
# and `SWEEP_SEARCHES_FIRST=1` makes a second sweep run the searches that need only
# the teacher (μ = 0.5 seed 2, μ = 0.3, 0.1, 0.7) before the usual order:
#
#   SWEEP_COMMIT=1 bash search/scripts/fashion-mnist.sh &
#   SWEEP_COMMIT=1 SWEEP_SEARCHES_FIRST=1 bash search/scripts/fashion-mnist.sh
# Epoch counts: TEACHER_EPOCHS, SEARCH_EPOCHS, RETRAIN_EPOCHS (the shipped models) and
# ABLATION_EPOCHS (each of the ablation's retrainings: the same for every mask, shorter
# than the shipped models' so that four masks at two μ fit in a few CPU-hours).
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-search/runs/fashion-mnist}
TEACHER_INIT=${TEACHER_INIT:-models/fashion-mnist-softmax}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-30}
SEARCH_EPOCHS=${SEARCH_EPOCHS:-6}
RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-10}
ABLATION_EPOCHS=${ABLATION_EPOCHS:-4}
# The search's settings (search/README.md, "A search that decides").
SEARCH_ARGS=${SEARCH_ARGS:-"--lambda 0.1 --lambda-beta 1e-4 --arch-lr-scale 10 --clamp --budget-rate 0.01 --commit-from 0.5"}
# mimalloc keeps freed tensor memory (13% less CPU time); one rayon thread is
# faster than two on a machine whose other core is busy.
export MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY:--1}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

JOBS=${SWEEP_JOBS:-1}

cargo build --release -p search
B=${CARGO_TARGET_DIR:-target}/release/mpcvit-search
mkdir -p "$RUNS"
# Commits of steps that end together take turns; a running step holds its own lock.
LOCKS=$(git rev-parse --absolute-git-dir)/sweep-locks
mkdir -p "$LOCKS"
COMMIT_LOCK=$(git rev-parse --absolute-git-dir)/sweep-commit.lock

# commit_result PATH MESSAGE: with SWEEP_COMMIT=1, commit PATH alone (taking turns with
# steps that end at the same time).
commit_result() {
  if [ "${SWEEP_COMMIT:-0}" = 1 ]; then
    flock "$COMMIT_LOCK" sh -c 'git add -f "$1" && git commit -q -m "$2" -- "$1"' _ "$1" "$2"
  fi
}

# finished DIR: the step in DIR has ended (its summary is written).
finished() { [ -e "$1/train.json" ]; }

# step NAME KEEP_CHECKPOINT ARGS...: run (or resume) one training step unless it
# finished; then drop the optimiser checkpoint (unless KEEP_CHECKPOINT=keep) and, with
# SWEEP_COMMIT=1, commit the step. Holds the step's lock meanwhile (another sweep
# running it: wait, then find it finished).
step() {
  local name=$1 keep=$2 lock
  shift 2
  local dir=$RUNS/$name
  exec {lock}>"$LOCKS/$name"
  if ! flock -n "$lock"; then
    echo "== $name: another sweep runs it; waiting"
    flock "$lock"
  fi
  if finished "$dir"; then
    echo "== $name: done"
  else
    local resume=()
    [ -e "$dir/checkpoint.json" ] && resume=(--resume)
    echo "== $name: $*"
    "$B" "$@" --out "$dir" --quiet "${resume[@]}"
    if [ "$keep" != keep ]; then
      rm -f "$dir/checkpoint.safetensors" "$dir/checkpoint.json"
    fi
    commit_result "$dir" "search sweep: $name finished ($(test_acc "$dir"))"
  fi
  exec {lock}>&-
  if [ "${SWEEP_STOP_AFTER:-}" = "$name" ]; then
    echo "== stopping after $name (SWEEP_STOP_AFTER)"
    exit 0
  fi
}

# test_acc DIR: the step's final test accuracy, from its train.json.
test_acc() {
  python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))["test_acc"]; print("test accuracy %.2f%%" % (100*a))' "$1/train.json"
}

step teacher drop train-teacher --init "$TEACHER_INIT" --epochs "$TEACHER_EPOCHS" \
  --lr 5e-4 --warmup-epochs 0
# search NAME MU SEED [ARGS...]: a budgeted search for ratio MU from the teacher.
search() {
  local name=$1 mu=$2 seed=$3
  shift 3
  # shellcheck disable=SC2086 # SEARCH_ARGS is a list of flags
  step "$name" keep search --init "$RUNS/teacher" --epochs "$SEARCH_EPOCHS" \
    --lr 5e-4 --min-lr 5e-4 --warmup-epochs 0 --seed "$seed" --target-mu "$mu" $SEARCH_ARGS "$@"
}
# retrain NAME SEARCH [ARGS...]: KD retraining of a binarised search (its weights) for
# $EPOCHS epochs (default RETRAIN_EPOCHS).
retrain() {
  local name=$1 from=$2
  shift 2
  step "$name" drop retrain --search "$RUNS/$from" --teacher "$RUNS/teacher" \
    --epochs "${EPOCHS:-$RETRAIN_EPOCHS}" --lr 5e-4 --warmup-epochs 0 "$@"
}
# ablation MU SEARCH: the searched mask and three random masks of ratio MU, each
# retrained from the teacher's weights with the same budget (ABLATION_EPOCHS) and seed
# (the search's weights have trained on its own mask and would favour it); $JOBS at a time.
ablation() {
  local mu=$1 from=$2 launched=0 ended=0 failed=0 k
  for k in searched 1 2 3; do
    local args=(--mu "$mu" --beta-keep 1 --init teacher) name="ablation-mu$mu-searched"
    if [ "$k" != searched ]; then
      args+=(--random-mask "$k")
      name="ablation-mu$mu-random$k"
    fi
    if [ "$JOBS" -le 1 ]; then
      EPOCHS=$ABLATION_EPOCHS retrain "$name" "$from" "${args[@]}"
      continue
    fi
    while [ $((launched - ended)) -ge "$JOBS" ]; do
      wait -n || failed=1
      ended=$((ended + 1))
    done
    EPOCHS=$ABLATION_EPOCHS retrain "$name" "$from" "${args[@]}" &
    launched=$((launched + 1))
  done
  while [ "$ended" -lt "$launched" ]; do
    wait -n || failed=1
    ended=$((ended + 1))
  done
  if [ "$failed" = 1 ]; then
    echo "== ablation μ = $mu: a retraining failed (see above); run the sweep again to resume" >&2
    exit 1
  fi
}

if [ "${SWEEP_SEARCHES_FIRST:-0}" = 1 ]; then
  search search-mu0.5-s2 0.5 2 --plus
  search search-mu0.3-s1 0.3 1
  for mu in 0.1 0.7; do search "search-mu$mu-s1" "$mu" 1; done
fi
search search-mu0.5-s1 0.5 1 --plus
retrain mu0.5 search-mu0.5-s1 --mu 0.5 --beta-keep 1
ablation 0.5 search-mu0.5-s1
search search-mu0.5-s2 0.5 2 --plus
"$B" agree --search "$RUNS/search-mu0.5-s1" --search "$RUNS/search-mu0.5-s2" --mu 0.5 |
  tee "$RUNS/agree.txt"
search search-mu0.3-s1 0.3 1
retrain mu0.3 search-mu0.3-s1 --mu 0.3 --beta-keep 1
ablation 0.3 search-mu0.3-s1
for mu in 0.1 0.7; do
  search "search-mu$mu-s1" "$mu" 1
  retrain "mu$mu" "search-mu$mu-s1" --mu "$mu" --beta-keep 1
done
retrain mu0 search-mu0.5-s1 --mu 0 --beta-keep 1
retrain mu1 search-mu0.5-s1 --mu 1 --beta-keep 1
retrain mu0.5-plus search-mu0.5-s1 --mu 0.5 --beta-keep 0.5
if [ ! -e "$RUNS/wan-cost.json" ]; then
  echo "== wan-cost.json: the WAN's costs around mu0.5's mask"
  "$B" cost --model "$RUNS/mu0.5" --mask model --link wan --out "$RUNS/wan-cost.json"
  commit_result "$RUNS/wan-cost.json" "search sweep: the WAN's per-head and per-block costs"
fi
search search-mu0.5-wan 0.5 1 --cost "$RUNS/wan-cost.json"
retrain mu0.5-wan search-mu0.5-wan --mu 0.5 --beta-keep 1
python3 search/scripts/ablation.py "$RUNS" | tee "$RUNS/ablation.md"
