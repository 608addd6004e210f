#!/usr/bin/env bash
# The project's test command, the README's and CI's (`.ci/run` calls exactly
# this): installs what the tests need, then runs every check.
#   1. scripts/setup.sh: toolchain components, Fashion-MNIST (root on Debian)
#   2. cargo fmt --all --check
#   3. scripts/check-docs.py --self-test, then scripts/check-docs.py: README,
#      docs and code comments describe the present (no dates in prose, no
#      narrative of measuring runs, no issue numbers)
#   4. cargo clippy --workspace --all-targets -- -D warnings
#   5. RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
#   6. cargo test --workspace
#   6b. scripts/web.sh: the web page (generated code and bundle reproduced,
#      tsc, headless Chromium against the real processes)
#   7. du -sh target (the build directory's size, for the record)
#   8. fuzz/run.sh: every fuzz target for MPCVIT_FUZZ_SECONDS (default 30)
#      from its committed corpus; its build directory is removed afterwards
#      (disk), 0 skips it
#   9. deploy/check.sh: compose and Kubernetes schemas, the Dockerfile's
#      shape, and the image's own cargo build
#  10. deploy/demo-test.sh: the compose demo, run for real with Docker (needs
#      root or a running dockerd; MPCVIT_SKIP_DEMO=1 accepts not running it,
#      loudly)
# Usage: bash scripts/test.sh       (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all --check
python3 scripts/check-docs.py --self-test
python3 scripts/check-docs.py
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
cargo test --workspace
bash scripts/web.sh
du -sh target
fuzz_seconds="${MPCVIT_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  bash fuzz/run.sh "$fuzz_seconds"
  du -sh fuzz/target && rm -rf fuzz/target
else
  echo "test.sh: fuzzing NOT RUN (MPCVIT_FUZZ_SECONDS=0)"
fi
# CI (MPCVIT_FREE_DISK=1, set by .ci/run) drops the debug build before the
# release build and the image build need the disk; a developer keeps it.
if [ "${MPCVIT_FREE_DISK:-0}" = 1 ]; then
  rm -rf target/debug
  echo "test.sh: removed target/debug (MPCVIT_FREE_DISK=1)"
fi
bash deploy/check.sh
bash deploy/demo-test.sh
