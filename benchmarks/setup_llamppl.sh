#!/usr/bin/env bash
# The peer environment of the steering benchmark (benchmarks/steering_llamppl.py): genlm's
# llamppl on PyTorch (CPU build) in .venv-llamppl, with ppl-jax installed beside it, and the
# default GGUF converted once to a Hugging Face directory that llamppl loads with no hub access.
#
#   bash benchmarks/setup_llamppl.sh
#
# Idempotent: the venv and the converted model are reused; pip skips what is already satisfied.
#
# Dependencies. llamppl 0.2.3 requires torch, numpy, scipy, protobuf, pre-commit, ipykernel and
# genlm-backend (vllm and mlx are extras only). genlm-backend 0.3.1 requires torch,
# transformers>=5,<6, sentencepiece, protobuf, accelerate, numba, numpy<2.5 and, on Linux,
# bitsandbytes (vllm, sglang, mlx, triton are extras only). None of the hard requirements is a
# GPU-only package or needs a build: every one is a manylinux or pure-Python wheel, and
# bitsandbytes (>= 0.45 has a CPU backend) brings no nvidia-* packages; it is imported only when
# quantization options are passed, which the benchmark does not. So both are installed with their
# declared dependencies (no --no-deps); pre-commit and ipykernel are unused but harmless.
# PyTorch goes in first from the local CPU wheel, so the resolver never pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-llamppl
TORCH_WHEEL=${TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
LLAMPPL_VERSION=0.2.3
GENLM_BACKEND_VERSION=0.3.1 # the version whose API benchmarks/steering_llamppl.py was written for
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

pip_install() {
  # The machine's pip configuration names local indexes that may be absent: drop that noise.
  "$VENV/bin/pip" install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
  pip_install --upgrade pip
fi
[[ -f "$TORCH_WHEEL" ]] || { echo "missing the CPU PyTorch wheel $TORCH_WHEEL" >&2; exit 1; }
pip_install "$TORCH_WHEEL"
pip_install transformers accelerate gguf "llamppl==$LLAMPPL_VERSION" \
  "genlm-backend==$GENLM_BACKEND_VERSION"
pip_install -e .

# The default GGUF as a Hugging Face directory (dequantized to float32; transformers refuses to
# save a model it loaded through its GGUF quantizer, so that marker is removed first: every
# weight is already a plain float32 tensor).
"$VENV/bin/python" - <<'EOF'
import shutil

import torch
import transformers

from ppl.models.lm.default_model import default_model_path

gguf = default_model_path()
target = gguf.parent / "SmolLM2-135M-Instruct-hf"
if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
    print(f"model: {target} (already converted)")
else:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        assert all(p.dtype == torch.float32 for p in model.parameters()), "not dequantized"
        quantizer.remove_quantization_config(model)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier attempt
    partial.rename(target)
    print(f"model: {target} (converted from {gguf.name})")
EOF

"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version

for name in ("torch", "transformers", "accelerate", "llamppl", "genlm-backend", "ppl-jax"):
    print(f"{name}: {version(name)}")
EOF
