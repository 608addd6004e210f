#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 60), starting from its
# committed corpus (fuzz/corpus/<target>); new inputs go to a scratch copy,
# so the committed corpus stays small. A crash fails the script and leaves
# the input in fuzz/artifacts/<target>/: turn it into a regression test.
#
#   bash fuzz/run.sh 30
#
# cargo fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the
# stable toolchain. No sanitizer: the code under test has no unsafe code,
# and libFuzzer's coverage alone finds panics and hangs.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build --sanitizer none
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $(cargo fuzz list); do
    mkdir -p "$scratch/$t" "corpus/$t"
    cargo fuzz run --sanitizer none "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 2>"$scratch/$t.log" || {
        tail -40 "$scratch/$t.log"
        echo "fuzz/run.sh: $t failed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    }
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$t.log" | grep -o '[0-9]*$')
    echo "$t: ${runs:-?} executions in ${secs} s, no crash"
done
