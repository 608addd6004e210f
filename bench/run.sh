#!/usr/bin/env bash
# Regenerates bench/results/: every e2e run (vit_7_4_32 at several μ, quad
# and erf GeLU, the bundled fashion-mnist-mu0.5) on loopback, LAN and WAN
# through the relay, then the Markdown, CSV and SVG pages. About 20 minutes
# on a quiet 2-core machine. Not part of scripts/test.sh.
#
# Usage: bash bench/run.sh
# Env:   IMAGES=3 (images per run, median reported)
#        LINKS="none lan wan"
#        KEEP=1     append to bench/results/e2e.csv instead of starting it anew
#        PEERS=1    also rerun CrypTen (bench/peers/run-crypten.sh; a 5 GB venv);
#                   otherwise the committed bench/results/crypten.csv is kept
#        REPORT_ONLY=1  only regenerate the pages from the CSV files
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
out=bench/results
csv="$out/e2e.csv"
images="${IMAGES:-3}"
links="${LINKS:-none lan wan}"
mkdir -p "$out"
# (`--examples` selects only examples: the mpcvit-bench binary is its own build.)
cargo build --release -q -p mpcvit-server --examples
cargo build --release -q -p mpcvit-bench
if [ "${REPORT_ONLY:-0}" != 1 ]; then
  if pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; then
    echo "bench/run.sh: a cargo build is running on this machine: timings will be noisy" >&2
  fi
  [ "${KEEP:-0}" = 1 ] || rm -f "$csv" "$out/load.txt"
  e2e() {
    echo "== e2e $*" >&2
    # The machine's load before each run, for reading the timings.
    echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) e2e $*" >> "$out/load.txt"
    target/release/examples/e2e --images "$images" --throughput false --in-memory false \
      --csv "$csv" "$@" | grep -E '^\| (end-to-end|rounds|bytes sent|link)' >&2
  }
  for link in $links; do
    for mu in 0 0.5 1; do
      for gelu in quad erf; do
        e2e --preset vit_7_4_32_mu05 --mu "$mu" --gelu "$gelu" --link "$link"
      done
    done
    # The paper's other μ points, with the paper's (erf) GeLU, on the
    # emulated networks.
    if [ "$link" != none ]; then
      for mu in 0.1 0.3 0.7; do
        e2e --preset vit_7_4_32_mu05 --mu "$mu" --gelu erf --link "$link"
      done
    fi
    e2e --model-dir models/fashion-mnist-mu0.5 --link "$link"
  done
  if [ "${PEERS:-0}" = 1 ]; then
    bash bench/peers/run-crypten.sh
  fi
fi
target/release/mpcvit-bench report --e2e "$csv" --peers "$out/crypten.csv" --paper bench/paper.csv --out "$out"
