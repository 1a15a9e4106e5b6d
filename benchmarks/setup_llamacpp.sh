#!/usr/bin/env bash
# Build llama-cpp-python from source in the benchmark's own environment (.venv-bench).
# GGML_NATIVE=OFF with AVX2/FMA/F16C: a native build died with an illegal instruction here.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
python3 -m venv .venv-bench
.venv-bench/bin/pip install --quiet --upgrade pip
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
  .venv-bench/bin/pip install --no-cache-dir "llama-cpp-python==${VERSION}"
