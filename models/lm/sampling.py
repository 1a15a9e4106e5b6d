"""Next-token sampling: temperature, top-k and top-p, with explicit PRNG keys."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to turn logits into a token.

    temperature 0 is greedy decoding. `top_k` keeps the k most likely tokens; `top_p` keeps
    the smallest set of most likely tokens whose probability reaches p (nucleus sampling).
    Both filters act on the tempered distribution, as in Hugging Face and llama.cpp.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class SampledTokens(NamedTuple):
    tokens: jax.Array  # [B] int32
    sampling_logprobs: jax.Array  # [B] log q(token): the filtered, tempered distribution
    model_logprobs: jax.Array  # [B] log p(token): the untempered model


def filtered_logits(logits: jax.Array, sampling: SamplingParams) -> jax.Array:
    """Tempered logits with tokens outside top-k / top-p set to -inf ([..., V], float32)."""
    logits = logits.astype(jnp.float32)
    if sampling.greedy:
        return logits
    logits = logits / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p is not None and sampling.top_p < 1:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        kept = mass_before < sampling.top_p  # the first token is always kept
        threshold = jnp.min(jnp.where(kept, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def sample(rng_key: jax.Array, logits: jax.Array, sampling: SamplingParams) -> SampledTokens:
    """Draw one token per row of `logits` [B, V]."""
    model_logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if sampling.greedy:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        sampling_logprobs = jnp.zeros(tokens.shape, jnp.float32)
    else:
        filtered = filtered_logits(logits, sampling)
        tokens = jax.random.categorical(rng_key, filtered, axis=-1).astype(jnp.int32)
        sampling_logprobs = jnp.take_along_axis(
            jax.nn.log_softmax(filtered, axis=-1), tokens[:, None], axis=-1
        )[:, 0]
    chosen = jnp.take_along_axis(model_logprobs, tokens[:, None], axis=-1)[:, 0]
    return SampledTokens(tokens, sampling_logprobs, chosen)
