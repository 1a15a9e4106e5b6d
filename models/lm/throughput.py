"""Prefill and decode throughput of the JAX runtime (used by `ppl bench-lm` and benchmarks/)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm.cache import KVCache, gather_cache
from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.sampling import SamplingParams

BENCH_TEXT = (
    "Sequential Monte Carlo methods approximate a sequence of distributions with weighted "
    "particles that are propagated, reweighted and resampled. "
)


def benchmark_prompt(lm: LanguageModel, num_tokens: int) -> list[int]:
    """A deterministic prompt of exactly `num_tokens` tokens."""
    ids = lm.tokenizer.encode(BENCH_TEXT, add_special_tokens=False)
    return (ids * (num_tokens // len(ids) + 1))[:num_tokens]


def _best_time(fn: Any, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def _decode_seconds(
    lm: LanguageModel, cache: KVCache, logits: jax.Array, new_tokens: int, repeats: int
) -> float:
    """Best time of decoding `new_tokens` tokens for every row of `cache` (temperature 1, no
    end-of-sequence), after a warm-up."""
    sampling = SamplingParams(1.0)

    def run() -> jax.Array:
        output = lm.decode(
            jax.random.key(0), cache, logits, new_tokens, sampling, stop_at_eos=False
        )
        return output.tokens

    return _best_time(run, repeats)


def measure(
    lm: LanguageModel,
    batch_sizes: Sequence[int],
    prompt_tokens: int = 64,
    new_tokens: int = 64,
    repeats: int = 2,
) -> list[dict[str, Any]]:
    """Prefill and decode tokens/s for each batch size (best of `repeats`, after a warm-up).

    Prefill runs `batch` copies of a `prompt_tokens` prompt; decode then samples `new_tokens`
    tokens (temperature 1, no end-of-sequence) for each of `batch` independent sequences.
    """
    prompt = benchmark_prompt(lm, prompt_tokens)
    capacity = lm.cache_capacity(prompt_tokens, new_tokens)
    results = []
    for batch in batch_sizes:
        prefill_s = _best_time(lambda b=batch: lm.prefill([prompt] * b, capacity), repeats)
        logits, cache = lm.prefill([prompt], capacity)
        rows = jnp.zeros((batch,), jnp.int32)
        decode_s = _decode_seconds(lm, gather_cache(cache, rows), logits[rows], new_tokens, repeats)
        results.append(
            {
                "batch": batch,
                "prompt_tokens": prompt_tokens,
                "new_tokens": new_tokens,
                "prefill_tokens_per_s": batch * prompt_tokens / prefill_s,
                "decode_tokens_per_s": batch * new_tokens / decode_s,
                "decode_ms_per_step": 1000 * decode_s / new_tokens,
            }
        )
    return results


def measure_context(
    lm: LanguageModel,
    contexts: Sequence[int],
    batch: int = 16,
    new_tokens: int = 32,
    repeats: int = 2,
) -> list[dict[str, Any]]:
    """Decode ms/step of `batch` rows after a prompt of each of `contexts` tokens.

    Every context runs at the same capacity (enough for the longest), twice: with the prompt
    stored once as the cache's shared prefix (`prefill_shared`, what `generate` does for one
    prompt sampled `batch` times) and with a copy per row (`prefill` and `gather_cache`).
    """
    capacity = lm.cache_capacity(max(contexts), new_tokens)
    results = []
    for context in contexts:
        prompt = benchmark_prompt(lm, context)
        row: dict[str, Any] = {"batch": batch, "context_tokens": context, "new_tokens": new_tokens}
        row["capacity"] = capacity
        shared = lm.prefill_shared(prompt, batch, capacity)
        logits, cache = lm.prefill([prompt], capacity)
        rows = jnp.zeros((batch,), jnp.int32)
        per_row = logits[rows], gather_cache(cache, rows)
        for name, (logits, cache) in (("shared", shared), ("per_row", per_row)):
            seconds = _decode_seconds(lm, cache, logits, new_tokens, repeats)
            row[f"{name}_ms_per_step"] = 1000 * seconds / new_tokens
        results.append(row)
    return results


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, int, str]]) -> str:
    """Rows as a text table; each column is (header, key, width, number format)."""
    lines = [" ".join(f"{header:>{width}}" for header, _, width, _ in columns)]
    for r in rows:
        lines.append(" ".join(f"{r[key]:>{width}{fmt}}" for _, key, width, fmt in columns))
    return "\n".join(lines)


def format_context_table(rows: Sequence[dict[str, Any]]) -> str:
    return _table(
        rows,
        [
            ("batch", "batch", 6, ""),
            ("context", "context_tokens", 8, ""),
            ("shared ms/step", "shared_ms_per_step", 15, ".1f"),
            ("per-row ms/step", "per_row_ms_per_step", 16, ".1f"),
        ],
    )


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    return _table(
        rows,
        [
            ("batch", "batch", 6, ""),
            ("prefill tok/s", "prefill_tokens_per_s", 14, ".1f"),
            ("decode tok/s", "decode_tokens_per_s", 13, ".1f"),
            ("ms/step", "decode_ms_per_step", 8, ".1f"),
        ],
    )


def environment() -> dict[str, Any]:
    import os
    import platform

    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "numpy": np.__version__,
    }
