"""Attention over each row's cached positions by the C++ kernel (`kernels/attention.cc`).

`transformer._row_attention` computes, for queries q [B, K, M, hd] (K KV heads, M = a group's
query heads times the chunk positions) and layer `layer` of the cache, the unnormalized softmax
part over row b's positions t < row_lengths[b]:

    max = max_t s_t,  total = sum_t e^(s_t - max),  weighted = sum_t e^(s_t - max) v_t,
    s_t = scale * q . k_t

On the CPU with float32 caches `row_attention` does this in one FFI call that reads each used
key and value once; XLA's loop over blocks of 64 positions is the fallback (other backends and
dtypes, or no kernel) and the reference the kernel is tested against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm.qmatmul import _library, kernel_available


def kernel_applies(q: jax.Array, keys: jax.Array) -> bool:
    """Whether `row_attention` can take these arrays (float32 on the CPU, kernel built)."""
    return (
        jax.default_backend() == "cpu"
        and q.dtype == jnp.float32
        and keys.dtype == jnp.float32
        and kernel_available()
    )


def row_attention(
    q: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    layer: jax.Array,
    row_lengths: jax.Array,
    scale: float,
    *,
    portable: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(max [B, K, M], total [B, K, M], weighted [B, K, M, hd]) of float32 q [B, K, M, hd]
    over keys, values [L, B, K, T, hd] at `layer`, row b seeing positions t < row_lengths[b]
    (-inf, 0 and 0 for a row with none). `portable` forces the scalar C++ path."""
    _library()
    batch, heads, queries, dim = q.shape
    if keys.ndim != 5 or keys.shape[1:3] != (batch, heads) or keys.shape[4] != dim:
        raise ValueError(f"row_attention: keys {keys.shape} do not match q {q.shape}")
    out = (
        jax.ShapeDtypeStruct((batch, heads, queries), jnp.float32),
        jax.ShapeDtypeStruct((batch, heads, queries), jnp.float32),
        jax.ShapeDtypeStruct((batch, heads, queries, dim), jnp.float32),
    )
    call = jax.ffi.ffi_call("ppl_row_attention", out, vmap_method="sequential")
    top, total, weighted = call(
        q,
        keys,
        values,
        jnp.asarray(layer, jnp.int32),
        row_lengths.astype(jnp.int32),
        scale=np.float32(scale),
        force_scalar=portable,
    )
    return top, total, weighted
