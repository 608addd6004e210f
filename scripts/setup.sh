#!/usr/bin/env bash
# Installs what the project needs on a fresh machine of this kind (CI runs it as root).
# The Rust toolchain itself comes with the machine; this adds the components the checks use.
set -euo pipefail

command -v cargo >/dev/null || { echo "setup: cargo not found: install a Rust toolchain (rustup)" >&2; exit 1; }
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "setup: adding rustup component $comp"
    rustup component add "$comp"
  fi
done
echo "setup: $(cargo --version), $(rustc --version)"
