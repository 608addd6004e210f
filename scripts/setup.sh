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

# Fashion-MNIST for the search crate's training and tests and the client's accuracy test
# (client/tests/accuracy.rs, which fails without it): the Debian package
# dataset-fashion-mnist installs the IDX files (gzip) under /usr/share/datasets/fashion-mnist/.
FMNIST_DIR=/usr/share/datasets/fashion-mnist
fmnist_missing=0
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -e "$FMNIST_DIR/$f.gz" ] || [ -e "$FMNIST_DIR/$f" ] || fmnist_missing=1
done
if [ "$fmnist_missing" = 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing dataset-fashion-mnist"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST is missing from $FMNIST_DIR; as root run:" >&2
    echo "       apt-get update && apt-get install -y dataset-fashion-mnist" >&2
  fi
fi

# The web page's checks (scripts/web.sh): Node.js with npm (web/'s packages
# come from web/package-lock.json through `npm ci` there) and Debian's
# Chromium, which the browser test drives headless.
web_missing=()
command -v node >/dev/null && command -v npm >/dev/null || web_missing+=(nodejs npm)
command -v chromium >/dev/null || web_missing+=(chromium)
if [ "${#web_missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${web_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${web_missing[@]}" >/dev/null
  else
    echo "setup: missing ${web_missing[*]}; as root run:" >&2
    echo "       apt-get update && apt-get install -y ${web_missing[*]}" >&2
  fi
fi

echo "setup: $(cargo --version), $(rustc --version)"
command -v node >/dev/null && echo "setup: node $(node --version), npm $(npm --version)"
command -v chromium >/dev/null && echo "setup: $(chromium --version 2>/dev/null)"
