"""Prefill, extension and the jit-compiled decode loop over a batch of sequences.

Each row of the batch has its own length and its own stop state; a row that finishes
(end-of-sequence token, stop string, or its token budget) stops changing while the others go on.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.models.lm.cache import KVCache
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.params import Params
from ppl.models.lm.sampling import SamplingParams, sample
from ppl.models.lm.stopping import StopAutomata, advance, matched
from ppl.models.lm.transformer import forward, output_logits

FINISH_LENGTH = 0  # ran out of new-token budget (or still running)
FINISH_EOS = 1
FINISH_STOP = 2
NO_TOKEN = -1  # fills token slots after a row finished


class DecodeOutput(NamedTuple):
    tokens: jax.Array  # [B, N] int32, NO_TOKEN after a row finished
    sampling_logprobs: jax.Array  # [B, N] log q of each token under the sampling distribution
    model_logprobs: jax.Array  # [B, N] log p of each token under the untempered model
    num_tokens: jax.Array  # [B] tokens generated per row
    finish_reason: jax.Array  # [B] FINISH_LENGTH / FINISH_EOS / FINISH_STOP
    cache: KVCache  # includes every generated token
    last_logits: jax.Array  # [B, V] next-token logits after each row's last token


@functools.partial(jax.jit, static_argnames=("config",))
def prefill(
    params: Params, config: DecoderConfig, tokens: jax.Array, lengths: jax.Array, cache: KVCache
) -> tuple[jax.Array, KVCache]:
    """Run right-padded prompts `tokens` [B, S] (real lengths `lengths`) into an empty cache.

    Returns the next-token logits [B, V] after each prompt and the filled cache.
    """
    hidden, cache = forward(params, config, tokens, cache, lengths, attend_cache=False)
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    return output_logits(params, last), cache


@functools.partial(jax.jit, static_argnames=("config",))
def extend(
    params: Params, config: DecoderConfig, tokens: jax.Array, num_new: jax.Array, cache: KVCache
) -> tuple[jax.Array, KVCache]:
    """Append right-padded chunks `tokens` [B, S] after each cached prefix.

    Returns the logits [B, S, V] at every chunk position (position s predicts token s + 1) and
    the cache.
    """
    hidden, cache = forward(params, config, tokens, cache, num_new)
    return output_logits(params, hidden), cache


class _LoopState(NamedTuple):
    step: jax.Array
    tokens: jax.Array
    sampling_logprobs: jax.Array
    model_logprobs: jax.Array
    num_tokens: jax.Array
    finish_reason: jax.Array
    finished: jax.Array
    stop_states: jax.Array
    logits: jax.Array
    cache: KVCache


def _step_key(rng_key: jax.Array, step: jax.Array) -> jax.Array:
    """`fold_in(rng_key, step)`, for one key or for each of a batch of row keys."""
    if rng_key.ndim == 0:
        return jax.random.fold_in(rng_key, step)
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(rng_key, step)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "sampling"))
def decode(
    params: Params,
    config: DecoderConfig,
    rng_key: jax.Array,
    cache: KVCache,
    logits: jax.Array,
    *,
    max_new_tokens: int,
    sampling: SamplingParams,
    eos_token_ids: jax.Array,
    stop: StopAutomata,
    finished: jax.Array | None = None,
) -> DecodeOutput:
    """Sample up to `max_new_tokens` tokens for every row, one compiled loop for the batch.

    Args:
        rng_key: one key, or one key per row [B]; the key of step t is `fold_in(rng_key, t)`
            (row b's `fold_in(rng_key[b], t)`: its draws then depend on no other row).
        cache: the state after the prompts (from `prefill`).
        logits: the next-token logits [B, V] after the prompts.
        eos_token_ids: [E] int32 token ids that end a sequence (E may be 0).
        stop: stop-string automata (zero stop strings allowed).
        finished: [B] bool rows that must not change (default: none).

    The caller ensures `cache.lengths + max_new_tokens <= cache.capacity`.
    """
    batch = logits.shape[0]
    if finished is None:
        finished = jnp.zeros((batch,), bool)
    init = _LoopState(
        step=jnp.zeros((), jnp.int32),
        tokens=jnp.full((batch, max_new_tokens), NO_TOKEN, jnp.int32),
        sampling_logprobs=jnp.zeros((batch, max_new_tokens), jnp.float32),
        model_logprobs=jnp.zeros((batch, max_new_tokens), jnp.float32),
        num_tokens=jnp.zeros((batch,), jnp.int32),
        finish_reason=jnp.full((batch,), FINISH_LENGTH, jnp.int32),
        finished=finished,
        stop_states=jnp.zeros((batch, stop.tables.shape[0]), jnp.int32),
        logits=logits.astype(jnp.float32),
        cache=cache,
    )

    def cond(state: _LoopState) -> jax.Array:
        return (state.step < max_new_tokens) & ~jnp.all(state.finished)

    def body(state: _LoopState) -> _LoopState:
        drawn = sample(_step_key(rng_key, state.step), state.logits, sampling)
        active = ~state.finished
        token = jnp.where(active, drawn.tokens, NO_TOKEN)
        is_eos = active & jnp.isin(drawn.tokens, eos_token_ids)
        stop_states = jnp.where(
            active[:, None], advance(stop, state.stop_states, drawn.tokens), state.stop_states
        )
        is_stop = active & ~is_eos & matched(stop, stop_states)
        hidden, cache = forward(
            params,
            config,
            jnp.where(active, drawn.tokens, 0)[:, None],
            state.cache,
            active.astype(jnp.int32),
        )
        logits = jnp.where(active[:, None], output_logits(params, hidden[:, 0]), state.logits)
        return _LoopState(
            step=state.step + 1,
            tokens=state.tokens.at[:, state.step].set(token),
            sampling_logprobs=state.sampling_logprobs.at[:, state.step].set(
                jnp.where(active, drawn.sampling_logprobs, 0.0)
            ),
            model_logprobs=state.model_logprobs.at[:, state.step].set(
                jnp.where(active, drawn.model_logprobs, 0.0)
            ),
            num_tokens=state.num_tokens + active,
            finish_reason=jnp.where(
                is_eos, FINISH_EOS, jnp.where(is_stop, FINISH_STOP, state.finish_reason)
            ),
            finished=state.finished | is_eos | is_stop,
            stop_states=stop_states,
            logits=logits,
            cache=cache,
        )

    final = jax.lax.while_loop(cond, body, init)
    return DecodeOutput(
        tokens=final.tokens,
        sampling_logprobs=final.sampling_logprobs,
        model_logprobs=final.model_logprobs,
        num_tokens=final.num_tokens,
        finish_reason=final.finish_reason,
        cache=final.cache,
        last_logits=final.logits,
    )
