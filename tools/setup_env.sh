#!/usr/bin/env bash
# Set up a fresh machine: .venv with PyTorch (CPU pin by default) and sparsetrt with its dev extras.
#   TORCH_SPEC="torch==2.13.0"  what to install for PyTorch first (an unpinned torch pulls GBs of CUDA wheels)
#   EXTRAS="dev"                 extras of sparsetrt to install (e.g. "dev,gpu" on a CUDA machine)
# Safe to run again: an existing .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[${EXTRAS:-dev}]"
echo "sparsetrt set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
