"""The GPU path's device check: logits parity and bfloat16 decode throughput on an accelerator.

    bash benchmarks/gpu_check.sh          # on a machine with a GPU (JAX with CUDA installed)

1. Parity: the default GGUF's logits on a fixed prompt computed on the GPU in float32 and in
   bfloat16 (weights and KV cache) against float32 on the CPU (the tested path): the maximum
   absolute difference and whether the greedy next tokens agree.
2. Decode throughput at batch 1, 16, 64 and 256 (64 prompt tokens, 64 new tokens, bfloat16),
   and the fraction of the memory-bandwidth bound reached: bytes a step must read (every
   weight once, the output head, and the cached keys and values of every row) divided by the
   step time, over the device's copy bandwidth measured in the same run (a jitted copy of a
   1 GiB array: 2 bytes moved per byte copied).

Prints a table and writes benchmarks/results/gpu_check.json. Weights are float (the
quantized-matmul kernel is a CPU kernel).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.bandwidth
PROMPT = "Sequential Monte Carlo methods approximate a sequence of distributions"


def device_copy_bandwidth(gigabytes: float = 1.0, repeats: int = 10) -> float:
    """Sustained device copy bandwidth in GB/s (bytes read plus written)."""
    x = jnp.ones((int(gigabytes * 2**30) // 4,), jnp.float32)
    copy = jax.jit(lambda a: a + 0.0)
    copy(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        copy(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * x.nbytes / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", default="1,16,64,256")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_check.json")
    args = parser.parse_args()

    from benchmarks.bandwidth import decode_step_bytes
    from ppl.models.lm import LanguageModel
    from ppl.models.lm.default_model import default_model_path
    from ppl.models.lm.throughput import measure

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()})", flush=True)
    path = default_model_path()
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        reference_lm = LanguageModel.from_gguf(path, cache=False, weights="float")
        ids = reference_lm.tokenizer.encode(PROMPT)
        reference = np.asarray(reference_lm.logits(ids))
    del reference_lm
    parity = {}
    for dtype in ("float32", "bfloat16"):
        lm = LanguageModel.from_gguf(path, dtype=dtype, cache=False)
        logits = np.asarray(lm.logits(ids), np.float32)
        parity[dtype] = {
            "max_abs_diff": float(np.abs(logits - reference).max()),
            "greedy_agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        }
        print(f"parity {dtype}: {parity[dtype]}", flush=True)
    bandwidth = device_copy_bandwidth()
    print(f"device copy bandwidth: {bandwidth:.0f} GB/s", flush=True)
    batches = [int(b) for b in args.batch.split(",")]
    rows = measure(lm, batches, 64, 64, repeats=3)  # lm: the bfloat16 model
    print(f"{'batch':>6} {'decode tok/s':>13} {'ms/step':>8} {'bound ms':>9} {'of bound':>9}")
    for row in rows:
        bound_ms = 1000 * decode_step_bytes(lm, row["batch"], 64 + 32) / (bandwidth * 1e9)
        row["bound_ms_per_step"] = bound_ms
        row["fraction_of_bandwidth_bound"] = bound_ms / row["decode_ms_per_step"]
        print(
            f"{row['batch']:>6} {row['decode_tokens_per_s']:>13.1f} "
            f"{row['decode_ms_per_step']:>8.2f} {bound_ms:>9.3f} "
            f"{row['fraction_of_bandwidth_bound']:>9.2f}"
        )
    report = {
        "device": device.device_kind,
        "jax": jax.__version__,
        "parity": parity,
        "copy_bandwidth_gb_s": bandwidth,
        "decode": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
