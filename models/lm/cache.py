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

    Row `b` holds `lengths[b]` valid positions; positions at and beyond it are ignored by
    attention and overwritten by the next tokens.
    """

    keys: jax.Array  # [L, B, Hkv, T, hd]: each head's [T, hd] block is contiguous for attention
    values: jax.Array  # [L, B, Hkv, T, hd]
    lengths: jax.Array  # [B] int32

    @property
    def batch_size(self) -> int:
        return int(self.keys.shape[1])

    @property
    def capacity(self) -> int:
        """Positions per sequence, T."""
        return int(self.keys.shape[3])


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

    One gather per array, a single pass over the selected rows.
    """
    check_fits((*cache.keys.shape[:1], ancestors.shape[0], *cache.keys.shape[2:]), cache.keys.dtype)
    return KVCache(
        jnp.take(cache.keys, ancestors, axis=1),
        jnp.take(cache.values, ancestors, axis=1),
        jnp.take(cache.lengths, ancestors, axis=0),
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
