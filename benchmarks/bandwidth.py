"""This machine's memory bandwidth (as STREAM's "copy" kernel measures it) and peak compute.

    python benchmarks/bandwidth.py            # GB/s and GFLOP/s on 1 thread and on every core

A copy `b[:] = a` of arrays far larger than the caches moves 2 x size bytes (one read, one
write); the best of `repeats` copies gives the sustained bandwidth. With several threads each
copies its own contiguous slice (NumPy releases the GIL inside the copy). `lm_throughput.py`
divides the bytes a decode step must read (`decode_step_bytes`) by the faster of the two to get
the step's memory bound, and the multiply-adds a step must do (`decode_step_flops`) by the peak
float32 FMA rate (`compute_peak`, from `fma_peak.c`) to get its compute bound.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np


def copy_bandwidth(megabytes: int = 512, repeats: int = 5, threads: int = 1) -> float:
    """Sustained copy bandwidth in GB/s (10^9 bytes read plus written per second)."""
    n = megabytes * 2**20 // 8
    source = np.ones(n)
    target = np.zeros(n)
    bounds = np.linspace(0, n, threads + 1).astype(int)

    def part(i: int) -> None:
        np.copyto(target[bounds[i] : bounds[i + 1]], source[bounds[i] : bounds[i + 1]])

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(part, range(threads)))
            best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def decode_step_bytes(lm: Any, batch: int, cached: int) -> int:
    """Bytes one decode step of `batch` rows must read from memory at least: every weight once
    (the embedding table only where it is also the tied output head; a lookup reads B rows)
    and `cached` positions of keys and values of every row."""
    params = lm.params if lm.params.lm_head is None else lm.params._replace(embed=None)
    weights = sum(int(a.nbytes) for a in jax.tree.leaves(params))
    c = lm.config
    kv = 2 * c.num_layers * c.num_kv_heads * c.head_dim * cached * batch
    return weights + kv * np.dtype(lm.dtype).itemsize


def decode_step_flops(lm: Any, batch: int) -> int:
    """Floating-point operations of one decode step's matrix products (2 per multiply-add):
    every layer's projections and the output head, for `batch` rows (attention over the cache
    is left out: at the contexts benchmarked it is memory, not compute, that it costs)."""
    c = lm.config
    attention = c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    per_token = c.num_layers * (attention + 3 * c.hidden_size * c.intermediate_size)
    return 2 * batch * (per_token + c.vocab_size * c.hidden_size)


def compute_peak(threads: int | None = None) -> dict[str, float] | None:
    """Peak float32 FMA GFLOP/s and int8 multiply-add GOP/s on 1 and `threads` threads, from
    `fma_peak.c` compiled with the machine's C compiler (None where there is none)."""
    compiler = shutil.which(os.environ.get("CC", "gcc"))
    if compiler is None:
        return None
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as directory:
        binary = Path(directory) / "fma_peak"
        source = Path(__file__).with_name("fma_peak.c")
        flags = ["-O3", "-mavx2", "-mfma", "-fopenmp"]
        subprocess.run([compiler, *flags, str(source), "-o", str(binary)], check=True)
        output = subprocess.run([str(binary), str(threads)], capture_output=True, text=True)
    return json.loads(output.stdout)


def measure() -> dict[str, float]:
    """Copy bandwidth on one thread and on every core; "bound" is the larger."""
    cores = os.cpu_count() or 1
    single, every = copy_bandwidth(threads=1), copy_bandwidth(threads=cores)
    return {
        "copy_gb_s_1_thread": single,
        f"copy_gb_s_{cores}_threads": every,
        "bound": max(single, every),
    }


if __name__ == "__main__":
    for name, value in measure().items():
        print(f"{name}: {value:.1f} GB/s")
    print(compute_peak())
