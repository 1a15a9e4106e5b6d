#!/usr/bin/env bash
# Device check for the GPU path (issue 19): on a machine with a GPU and JAX's CUDA plugin,
# run the runtime's logits tests on the accelerator, then logits parity and bfloat16 decode
# throughput at batch 1, 16, 64 and 256 with the fraction of the memory-bandwidth bound.
# Usage: bash benchmarks/gpu_check.sh   (writes benchmarks/results/gpu_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if ! "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() == 'cpu')"; then
  echo "no GPU backend in JAX here ($("$PYTHON" -c 'import jax; print(jax.devices())')); nothing to check" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 300 "$PYTHON" -m pytest -q -x -p no:cacheprovider \
  tests/models/lm/test_transformer.py tests/models/lm/test_generation.py
PYTHONPATH=. timeout 400 "$PYTHON" benchmarks/gpu_check.py "$@"
