"""A batched key/value cache whose batch axis is the particle axis."""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm.config import DecoderConfig


class KVCache(NamedTuple):
    """Keys and values of every layer for a batch of sequences of their own lengths.

    Optionally the first P positions of every row are one shared prefix, stored once
    (`prefix_keys`, `prefix_values`; None when there is none, P = 0). Row `b`'s sequence is
    then the prefix followed by its own positions: absolute position `p` of row `b` lives at
    `prefix_*[:, :, p]` for p < P and at `keys[:, b, :, p - P]` for p >= P.

    `lengths[b]` is row b's whole sequence length, prefix included (so `lengths >= P`); its
    own positions at and beyond `lengths[b] - P` are ignored by attention and overwritten by
    the next tokens. `capacity` is likewise the total positions a row can hold, P + T.
    """

    keys: jax.Array  # [L, B, Hkv, T, hd]: each head's [T, hd] block is contiguous for attention
    values: jax.Array  # [L, B, Hkv, T, hd]
    lengths: jax.Array  # [B] int32, prefix included
    prefix_keys: jax.Array | None = None  # [L, Hkv, P, hd], every position valid
    prefix_values: jax.Array | None = None  # [L, Hkv, P, hd]

    @property
    def batch_size(self) -> int:
        return int(self.keys.shape[1])

    @property
    def prefix_length(self) -> int:
        """P, the positions of the shared prefix (0 without one)."""
        return 0 if self.prefix_keys is None else int(self.prefix_keys.shape[2])

    @property
    def capacity(self) -> int:
        """Positions per sequence, P + T."""
        return self.prefix_length + int(self.keys.shape[3])


def init_cache(
    config: DecoderConfig, batch_size: int, capacity: int, dtype: jnp.dtype = jnp.float32
) -> KVCache:
    """An empty cache for `batch_size` sequences of up to `capacity` tokens."""
    if capacity > config.context_length:
        from ppl.models.lm.errors import ContextLengthError

        raise ContextLengthError(
            f"a cache of {capacity} positions exceeds the model's context length "
            f"{config.context_length}"
        )
    shape = (config.num_layers, batch_size, config.num_kv_heads, capacity, config.head_dim)
    check_fits(shape, dtype)
    zeros = jnp.zeros(shape, dtype)
    return KVCache(zeros, zeros, jnp.zeros((batch_size,), jnp.int32))


def gather_cache(cache: KVCache, ancestors: jax.Array) -> KVCache:
    """Rows `ancestors` of the cache: resampling particles or fanning a prompt out to samples.

    One gather per array, a single pass over the selected rows; a shared prefix is kept as is.
    """
    check_fits((*cache.keys.shape[:1], ancestors.shape[0], *cache.keys.shape[2:]), cache.keys.dtype)
    return cache._replace(
        keys=jnp.take(cache.keys, ancestors, axis=1),
        values=jnp.take(cache.values, ancestors, axis=1),
        lengths=jnp.take(cache.lengths, ancestors, axis=0),
    )


@functools.partial(jax.jit, static_argnames=("prefix_length", "num_rows"))
def share_prefix(cache: KVCache, prefix_length: int, num_rows: int) -> KVCache:
    """Row 0 of a prefix-less cache as `num_rows` rows whose first `prefix_length` positions
    are stored once as the shared prefix; each row keeps its own copy of the rest.

    Every row gets row 0's length; the capacity is unchanged.
    """
    if cache.prefix_keys is not None:
        raise ValueError("the cache already has a shared prefix")
    if not 0 < prefix_length <= cache.capacity:
        raise ValueError(f"prefix_length must be in [1, {cache.capacity}], got {prefix_length}")
    rows = jnp.zeros((num_rows,), jnp.int32)
    return KVCache(
        keys=jnp.take(cache.keys[:, :1, :, prefix_length:], rows, axis=1),
        values=jnp.take(cache.values[:, :1, :, prefix_length:], rows, axis=1),
        lengths=jnp.take(cache.lengths[:1], rows),
        prefix_keys=cache.keys[:, 0, :, :prefix_length],
        prefix_values=cache.values[:, 0, :, :prefix_length],
    )


@functools.cache
def memory_limit() -> int:
    """Bytes the cache may use at most: the first device's memory limit where JAX reports one
    (a GPU), else the machine's physical memory."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(shape: tuple[int, ...], dtype: jnp.dtype) -> None:
    """A ValueError, before anything is allocated, when keys and values of `shape`
    [L, B, Hkv, T, hd] need more memory than `memory_limit()` (a batch of 10^8 samples)."""
    needed = 2 * math.prod(shape) * np.dtype(dtype).itemsize
    if needed > memory_limit():
        raise ValueError(
            f"a KV cache for {shape[1]} sequences of {shape[3]} positions needs "
            f"{needed / 2**30:.1f} GiB, more than the {memory_limit() / 2**30:.1f} GiB this "
            "device has; use fewer samples or particles, or fewer tokens"
        )
