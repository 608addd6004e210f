#!/usr/bin/env bash
# The Pareto front on the paper's terms: each model directory (default: every model in
# models/) through the three processes of examples/e2e (two parties and the dealer,
# mutual TLS) on loopback, the LAN and the WAN relay (20 ms each way, 400 Mbit/s), then
# `mpcvit-search pareto` with those latencies, the plaintext test accuracy on all
# 10,000 Fashion-MNIST test images, and the paper's CIFAR-10 points for shape.
#
#   bash search/scripts/pareto.sh [MODEL_DIR...]
#
# Writes $OUT/pareto.md (the table), pareto.json, pareto.svg and pareto-e2e.csv (the
# runs). Env: OUT=models, IMAGES=3 (images per run; the median is reported),
# LINKS="none lan wan". Timings are the machine's: run it on a quiet one.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-models}
images=${IMAGES:-3}
links=${LINKS:-none lan wan}
if [ $# -eq 0 ]; then
  for m in models/*/manifest.json; do set -- "$@" "$(dirname "$m")"; done
fi
cargo build --release -q -p mpcvit-server --examples
cargo build --release -q -p search
mkdir -p "$out"
csv=$out/pareto-e2e.csv
rm -f "$csv"
for dir in "$@"; do
  for link in $links; do
    echo "== $dir on $link" >&2
    target/release/examples/e2e --model-dir "$dir" --link "$link" --images "$images" \
      --throughput false --in-memory false --csv "$csv" |
      grep -E '^\| (end-to-end|rounds)' >&2 || true
  done
done
args=()
for dir in "$@"; do args+=(--model "$dir"); done
target/release/mpcvit-search pareto "${args[@]}" --e2e "$csv" --paper bench/paper.csv \
  --svg "$out/pareto.svg" --json "$out/pareto.json" | grep '^|' > "$out/pareto.md"
cat "$out/pareto.md"
