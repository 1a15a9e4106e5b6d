"""Host-driven loops with a progress bar, for long chains (particle Gibbs, PMMH, tempering).

`lax.scan` over the whole run is one compiled call with no feedback; `scan_with_progress`
runs the same scan in compiled chunks from the host and advances a tqdm bar after each, so
a long run shows how far it is and how fast it goes. Results are identical to the one-call
scan (the chunks see the same per-iteration inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm


def scan_with_progress(
    body: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any,
    chunk_size: int = 100,
    description: str = "",
    progress: bool = True,
) -> tuple[Any, Any]:
    """`jax.lax.scan(body, init, xs)` run in jitted chunks of `chunk_size` iterations.

    Not traceable itself (it loops on the host); call it outside `jax.jit`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    length = jax.tree.leaves(xs)[0].shape[0]
    run_chunk = jax.jit(lambda carry, chunk: jax.lax.scan(body, carry, chunk))
    outputs = []
    carry = init
    with tqdm(total=length, desc=description, disable=not progress, leave=False) as bar:
        for start in range(0, length, chunk_size):
            chunk = jax.tree.map(lambda x, s=start: x[s : s + chunk_size], xs)
            carry, out = run_chunk(carry, chunk)
            outputs.append(out)
            if progress:  # count finished steps, not dispatched ones (dispatch is asynchronous)
                jax.block_until_ready(out)
            bar.update(jax.tree.leaves(chunk)[0].shape[0])
    stacked = jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=0), *outputs)
    return carry, stacked
