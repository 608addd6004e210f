#!/usr/bin/env bash
# A/B of one training step (batch 128, forward + backward + AdamW) on one machine in one
# run: two builds of `examples/bench_step.rs` (e.g. main's and a branch's) alternate,
# REPS times each, on one thread, and PyTorch (search/scripts/torch_step.py, when
# TORCH_PY points at a Python with torch) runs the same network and batch in the same
# loop on 1 and 2 threads. Each run prints the mean seconds of STEPS steps after two
# warm-up steps; the summary gives the minimum and the median over the runs.
#
#   cargo build --release -p search --example bench_step   # the new build
#   bash search/scripts/bench_step_ab.sh OLD_BIN NEW_BIN [REPS]
#
# Env: DIM (96), MLP (192), PATCH (4), STEPS (5), TORCH_PY (unset: no PyTorch runs),
# NEW_2T=1 also times NEW_BIN on two threads; OLD_KEEP=1 also times OLD_BIN with
# MIMALLOC_PURGE_DELAY=-1 (what `mpcvit-search` and bench_step now set themselves), to
# tell the allocator's share from the kernels'. Raw lines go to stderr, the summary table
# to stdout.
set -euo pipefail
old=${1:?usage: bench_step_ab.sh OLD_BIN NEW_BIN [REPS]}
new=${2:?usage: bench_step_ab.sh OLD_BIN NEW_BIN [REPS]}
reps=${3:-6}
export DIM=${DIM:-96} MLP=${MLP:-192} PATCH=${PATCH:-4} STEPS=${STEPS:-5}
torch_script="$(dirname "$0")/torch_step.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Seconds per step from one bench_step line (forward + backward + AdamW means).
candle_step() {
  env RAYON_NUM_THREADS="$1" ${3:-} "$2" 128 | tee -a /dev/stderr |
    sed -E 's/.*forward ([0-9.]+) s, backward ([0-9.]+) s, AdamW ([0-9.]+) s.*/\1 \2 \3/' |
    awk '{ printf "%.4f\n", $1 + $2 + $3 }'
}

# Median seconds per step from one torch_step.py line.
torch_step() {
  "$TORCH_PY" "$torch_script" --threads "$1" --dim "$DIM" --mlp "$MLP" --patch "$PATCH" \
    --steps "$STEPS" 2>/dev/null | tee -a /dev/stderr |
    sed -E 's/.*median ([0-9.]+) s.*/\1/'
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for i in $(seq "$reps"); do
  candle_step 1 "$old" >>"$tmp/old-1t"
  if [ "${OLD_KEEP:-0}" = 1 ]; then
    candle_step 1 "$old" MIMALLOC_PURGE_DELAY=-1 >>"$tmp/old_keep-1t"
  fi
  candle_step 1 "$new" >>"$tmp/new-1t"
  if [ "${NEW_2T:-0}" = 1 ]; then candle_step 2 "$new" >>"$tmp/new-2t"; fi
  if [ -n "${TORCH_PY:-}" ]; then
    torch_step 1 >>"$tmp/torch-1t"
    torch_step 2 >>"$tmp/torch-2t"
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

echo "| build | threads | runs | min s/step | median s/step |"
echo "|---|---|---|---|---|"
for f in old-1t old_keep-1t new-1t new-2t torch-1t torch-2t; do
  [ -s "$tmp/$f" ] || continue
  sort -n "$tmp/$f" | awk -v name="${f%-*}" -v t="${f#*-}" '
    { v[NR] = $1 }
    END {
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "| %s | %s | %d | %.3f | %.3f |\n", name, substr(t, 1, 1), NR, v[1], med
    }'
done
