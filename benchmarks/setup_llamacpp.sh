#!/usr/bin/env bash
# Build llama-cpp-python, with its OpenAI-compatible server, from source in its own environment
# (.venv-bench): the peer of the throughput benchmark and the server the served-backend tests
# start. Reuses an existing build of the same version.
# GGML_NATIVE=OFF with AVX2/FMA/F16C: a native build died with an illegal instruction here.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
if .venv-bench/bin/python -c "import llama_cpp, llama_cpp.server, sys; sys.exit(llama_cpp.__version__ != '${VERSION}')" 2>/dev/null; then
  exit 0
fi
python3 -m venv .venv-bench
.venv-bench/bin/pip install --quiet --upgrade pip
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
  .venv-bench/bin/pip install --quiet --no-cache-dir "llama-cpp-python[server]==${VERSION}"
