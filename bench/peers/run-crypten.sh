#!/usr/bin/env bash
# CrypTen 0.4.1 on the same random vit_7_4_32 checkpoint as mpcvit's e2e
# benchmark (seed 1, μ = 0.5: the `_mu05` checkerboard of ReLU-Softmax and
# ScaleAttn heads), two processes on loopback; prints latency, rounds
# (communication calls), bytes per party, the error against the plaintext
# model and the ratio to mpcvit's latest loopback run in
# bench/results/e2e.csv; appends a row to bench/results/crypten.csv and its
# output to bench/results/crypten-DATE.txt.
#
# Optional (not part of scripts/test.sh): the venv is about 5 GB.
# Usage: bash bench/peers/run-crypten.sh            (GELUS="quad erf" RUNS=3 MU=0.5)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
gelus="${GELUS:-quad erf}"
runs="${RUNS:-3}"
mu="${MU:-0.5}"
csv="${CSV:-bench/results/crypten.csv}"
venv="$(bash bench/peers/setup-crypten.sh | tail -1)"
cargo build --release -q -p mpcvit-bench
if pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; then
  echo "run-crypten: a cargo build is running on this machine: the timing will be noisy" >&2
fi
log="${LOG:-bench/results/crypten-$(date -u +%F).txt}"
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
for gelu in $gelus; do
  dir="target/peers/vit_7_4_32_mu${mu}-${gelu}"
  target/release/mpcvit-bench export --shape vit_7_4_32 --mu "$mu" --gelu "$gelu" --seed 1 --out "$dir"
  # One torch thread per process (two processes on two cores); OpenBLAS's
  # core-type override is for numpy's kernels, not torch's.
  # The output (not CrypTen's warnings) is kept beside the CSV.
  { echo "== $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg), $machine"
    # A bound: should one of the two processes vanish, the other waits on
    # gloo for ever; timeout signals the whole process group.
    OMP_NUM_THREADS=1 timeout "${TIMEOUT:-900}" "$venv/bin/python" -W ignore bench/peers/crypten_vit.py "$dir" --runs "$runs" \
      --csv "$csv" --machine "$machine" --mpcvit-csv bench/results/e2e.csv 2>&1; } | tee -a "$log"
done
