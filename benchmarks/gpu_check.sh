#!/usr/bin/env bash
# Proof of the GPU path (issue 12 item 4), on a machine with a CUDA device, from the repository root:
#   bash benchmarks/gpu_check.sh            # writes benchmarks/gpu.md (--force: it is this run's result)
# 1. the CUDA tests (every test whose name says cuda; they skip without a GPU, so a GPU is required here),
# 2. benchmarks/gpu_throughput.py: one epoch of bignas-small supernet training on mnist5k, then up to 50
#    subnets on the full protocol, stopping new subnets after GPU_BUDGET_S seconds of scoring (default 360)
#    so the whole check fits a 10-minute slot.
# Fails fast: any failing step stops the script with its exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3 || command -v python)
PY=$(realpath "$PY")
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh: torch sees no CUDA device")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
t0=$(date +%s)
"$PY" -m pytest -q -p no:cacheprovider -rs -k "cuda or gpu" tests/
echo "CUDA tests: $(( $(date +%s) - t0 )) s"
cd benchmarks
"$PY" gpu_throughput.py --device cuda --subnets "${GPU_SUBNETS:-50}" --time-budget "${GPU_BUDGET_S:-360}" --force "$@" 2>&1 \
  || { echo "gpu_throughput.py failed"; exit 1; }
echo "gpu_check.sh: done in $(( $(date +%s) - t0 )) s; see benchmarks/gpu.md"
