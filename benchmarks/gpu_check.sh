#!/usr/bin/env bash
# The GPU check (issue 23): prepare a CelebA-shaped synthetic folder, train the celeba profile a few
# hundred steps in float32 / mixed precision, with and without XLA (images/s, peak GPU memory), sample
# a grid, resume once; one JSON record and the grid go to RESULTS (default benchmarks/results).
#   benchmarks/gpu_check.sh [RESULTS]          # on a GPU: under 10 minutes
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh   # smoke-sized, seconds on a CPU (tests/test_gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
exec env TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" "$PYTHON" benchmarks/gpu_check.py "$@"
