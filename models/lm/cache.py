"""A batched key/value cache whose batch axis is the particle axis."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

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
    zeros = jnp.zeros(shape, dtype)
    return KVCache(zeros, zeros, jnp.zeros((batch_size,), jnp.int32))


def gather_cache(cache: KVCache, ancestors: jax.Array) -> KVCache:
    """Rows `ancestors` of the cache: resampling particles or fanning a prompt out to samples.

    One gather per array, a single pass over the selected rows.
    """
    return KVCache(
        jnp.take(cache.keys, ancestors, axis=1),
        jnp.take(cache.values, ancestors, axis=1),
        jnp.take(cache.lengths, ancestors, axis=0),
    )
