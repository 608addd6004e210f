#!/usr/bin/env bash
# Installs CrypTen 0.4.1 (PyPI) into a virtual environment under target/
# (git-ignored): Python 3.11, torch 2.0.1, numpy < 2. About 5 GB (torch 2.0.1
# from PyPI brings its CUDA libraries even though only the CPU is used).
# CrypTen 0.4.1 depends on the deprecated `sklearn` package name, which pip
# refuses unless SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL=True.
#
# Usage: bash bench/peers/setup-crypten.sh        (idempotent; prints the venv)
# Env:   CRYPTEN_VENV (default target/peers/crypten-venv), PYTHON (python3.11)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${CRYPTEN_VENV:-target/peers/crypten-venv}"
py="${PYTHON:-python3.11}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import crypten' 2>/dev/null; then
  echo "$venv"
  exit 0
fi
if ! command -v "$py" >/dev/null; then
  echo "setup-crypten: $py not found (apt-get install python3.11 python3.11-venv, or set PYTHON)" >&2
  exit 1
fi
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
  echo "setup-crypten: $py is not Python 3.11 (torch 2.0.1 has wheels up to 3.11)" >&2
  exit 1
}
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv"
export SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL=True
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
  "crypten==0.4.1" "torch==2.0.1" "torchvision==0.15.2" "numpy<2" safetensors
"$venv/bin/python" -c 'import crypten, torch, numpy; print("crypten", crypten.__version__, "torch", torch.__version__, "numpy", numpy.__version__)' >&2
echo "$venv"
