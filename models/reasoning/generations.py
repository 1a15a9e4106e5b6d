"""The state of a batch of partial generations, and one reasoning step for every live row.

A reasoning step is the text a row generates until the step delimiter (default "\\n\\n"), an
end-of-sequence token, or the per-step token cap. A row is finished after an
end-of-sequence token or after `max_steps` steps; finished rows are absorbed: they never
change again. The batch axis of every array, and of the KV cache, is the particle axis, so
resampling is `gather_generations` by ancestor indices.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm.cache import KVCache, gather_cache
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.decoding import FINISH_EOS, NO_TOKEN, decode
from ppl.models.lm.params import Params
from ppl.models.lm.sampling import SamplingParams, filtered_logits
from ppl.models.lm.stopping import StopAutomata
from ppl.models.lm.transformer import forward, output_logits

RUNNING = 0
FINISHED_EOS = 1  # the row emitted an end-of-sequence token
FINISHED_MAX_STEPS = 2  # the row used all of its steps
FINISH_NAMES = {RUNNING: "running", FINISHED_EOS: "eos", FINISHED_MAX_STEPS: "max_steps"}


class Generations(NamedTuple):
    """B partial generations after their prompts (every leaf has the batch axis; the cache's
    is axis 1)."""

    tokens: jax.Array  # [B, L] generated token ids, NO_TOKEN beyond num_tokens
    num_tokens: jax.Array  # [B] generated tokens so far
    num_steps: jax.Array  # [B] reasoning steps so far
    step_start: jax.Array  # [B] index in `tokens` where the latest step begins
    step_ends: jax.Array  # [B, max_steps] num_tokens after each step (0 for steps not taken)
    finished: jax.Array  # [B] bool
    finish_reason: jax.Array  # [B] RUNNING / FINISHED_EOS / FINISHED_MAX_STEPS
    model_logprob: jax.Array  # [B] log p of the generated tokens under the untempered model
    sampling_logprob: jax.Array  # [B] log q of the generated tokens under the sampler
    step_model_logprob: jax.Array  # [B] log p of the latest step's tokens
    step_sampling_logprob: jax.Array  # [B] log q of the latest step's tokens
    cache: KVCache  # prompt and generated tokens, batch axis 1
    logits: jax.Array  # [B, V] next-token logits after each row's last token


def start_generations(
    cache: KVCache, logits: jax.Array, max_tokens: int, max_steps: int
) -> Generations:
    """Empty generations after prompts already in `cache` (next-token `logits` [B, V])."""
    batch = logits.shape[0]
    zeros_f = jnp.zeros((batch,), jnp.float32)
    zeros_i = jnp.zeros((batch,), jnp.int32)
    return Generations(
        tokens=jnp.full((batch, max_tokens), NO_TOKEN, jnp.int32),
        num_tokens=zeros_i,
        num_steps=zeros_i,
        step_start=zeros_i,
        step_ends=jnp.zeros((batch, max_steps), jnp.int32),
        finished=jnp.zeros((batch,), bool),
        finish_reason=zeros_i,
        model_logprob=zeros_f,
        sampling_logprob=zeros_f,
        step_model_logprob=zeros_f,
        step_sampling_logprob=zeros_f,
        cache=cache,
        logits=logits.astype(jnp.float32),
    )


@jax.jit
def gather_generations(generations: Generations, ancestors: jax.Array) -> Generations:
    """Rows `ancestors` of every array and of the KV cache."""
    return Generations(
        **_gather_rows(generations, ancestors), cache=gather_cache(generations.cache, ancestors)
    )


def _gather_rows(generations: Generations, ancestors: jax.Array) -> dict[str, jax.Array]:
    """Rows `ancestors` of every array but the cache."""
    return {
        name: jnp.take(value, ancestors, axis=0)
        for name, value in generations._asdict().items()
        if name != "cache"
    }


@functools.partial(jax.jit, static_argnames=("config", "max_step_tokens", "max_steps", "sampling"))
def extend_generations(
    params: Params,
    config: DecoderConfig,
    rng_key: jax.Array,
    generations: Generations,
    *,
    max_step_tokens: int,
    max_steps: int,
    sampling: SamplingParams,
    eos_token_ids: jax.Array,
    delimiter: StopAutomata,
) -> Generations:
    """Generate one reasoning step for every live row, in one compiled decode loop.

    Live rows decode until the delimiter, an end-of-sequence token or `max_step_tokens`
    tokens; finished rows are left as they are. The caller ensures the token buffer and the
    cache have room for `max_step_tokens` more tokens per live row.
    """
    live = ~generations.finished
    out = decode(
        params,
        config,
        rng_key,
        generations.cache,
        generations.logits,
        max_new_tokens=max_step_tokens,
        sampling=sampling,
        eos_token_ids=eos_token_ids,
        stop=delimiter,
        finished=generations.finished,
    )
    capacity = generations.tokens.shape[1]
    offsets = jnp.arange(max_step_tokens, dtype=jnp.int32)[None, :]
    positions = generations.num_tokens[:, None] + offsets
    positions = jnp.where(offsets < out.num_tokens[:, None], positions, capacity)  # dropped
    rows = jnp.arange(live.shape[0])[:, None]
    tokens = generations.tokens.at[rows, positions].set(out.tokens, mode="drop")
    return _finish_step(
        generations,
        live,
        tokens,
        out.num_tokens,
        out.finish_reason == FINISH_EOS,
        jnp.sum(out.model_logprobs, axis=1),  # zeros for rows that did not run
        jnp.sum(out.sampling_logprobs, axis=1),
        out.cache,
        out.last_logits,
        max_steps,
    )


def _finish_step(
    generations: Generations,
    live: jax.Array,
    tokens: jax.Array,
    step_tokens: jax.Array,
    ended_with_eos: jax.Array,
    step_model: jax.Array,
    step_sampling: jax.Array,
    cache: KVCache,
    logits: jax.Array,
    max_steps: int,
) -> Generations:
    """The bookkeeping after `step_tokens` [B] new tokens were written for the `live` rows."""
    num_tokens = generations.num_tokens + step_tokens
    num_steps = generations.num_steps + live
    eos = live & ended_with_eos
    out_of_steps = live & ~eos & (num_steps >= max_steps)
    finish_reason = jnp.where(
        eos, FINISHED_EOS, jnp.where(out_of_steps, FINISHED_MAX_STEPS, generations.finish_reason)
    )
    rows = jnp.arange(live.shape[0])
    slot = jnp.where(live, generations.num_steps, max_steps)  # out of range: dropped
    return Generations(
        tokens=tokens,
        num_tokens=num_tokens,
        num_steps=num_steps,
        step_start=jnp.where(live, generations.num_tokens, generations.step_start),
        step_ends=generations.step_ends.at[rows, slot].set(num_tokens, mode="drop"),
        finished=generations.finished | eos | out_of_steps,
        finish_reason=finish_reason,
        model_logprob=generations.model_logprob + step_model,
        sampling_logprob=generations.sampling_logprob + step_sampling,
        step_model_logprob=jnp.where(live, step_model, generations.step_model_logprob),
        step_sampling_logprob=jnp.where(live, step_sampling, generations.step_sampling_logprob),
        cache=cache,
        logits=logits,
    )


@functools.partial(jax.jit, static_argnames=("config", "max_steps", "sampling"))
def replay_step(
    params: Params,
    config: DecoderConfig,
    generations: Generations,
    forced: jax.Array,
    step_tokens: jax.Array,
    *,
    max_steps: int,
    sampling: SamplingParams,
    eos_token_ids: jax.Array,
) -> Generations:
    """Append given steps to the `forced` rows [B] instead of sampling them (conditional SMC).

    `step_tokens` [B, S] holds each forced row's next step, right-padded with NO_TOKEN. One
    forward pass over the chunk updates the cache and the next-token logits; the log p and
    log q of the forced tokens are computed as if they had been sampled. Other rows are left
    as they are.
    """
    lengths = jnp.where(forced, jnp.sum(step_tokens != NO_TOKEN, axis=1), 0).astype(jnp.int32)
    chunk = jnp.where(step_tokens == NO_TOKEN, 0, step_tokens)
    hidden, cache = forward(params, config, chunk, generations.cache, lengths)
    chunk_logits = output_logits(params, hidden)  # [B, S, V]: position s predicts s + 1
    before = jnp.concatenate([generations.logits[:, None], chunk_logits[:, :-1]], axis=1)
    valid = jnp.arange(chunk.shape[1])[None, :] < lengths[:, None]

    def logprob_of(logits: jax.Array) -> jax.Array:
        logprobs = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(logprobs, chunk[..., None], axis=-1)[..., 0]
        return jnp.sum(jnp.where(valid, picked, 0.0), axis=1)

    step_model = logprob_of(before)
    step_sampling = logprob_of(filtered_logits(before, sampling)) if not sampling.greedy else 0.0
    step_sampling = step_sampling * jnp.ones_like(step_model)
    capacity = generations.tokens.shape[1]
    positions = generations.num_tokens[:, None] + jnp.arange(chunk.shape[1])[None, :]
    positions = jnp.where(valid, positions, capacity)
    rows = jnp.arange(chunk.shape[0])[:, None]
    tokens = generations.tokens.at[rows, positions].set(step_tokens, mode="drop")
    last = jnp.take_along_axis(step_tokens, jnp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
    new_logits = jnp.take_along_axis(
        chunk_logits, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1
    )[:, 0]
    return _finish_step(
        generations,
        forced & ~generations.finished,
        tokens,
        lengths,
        jnp.isin(last, eos_token_ids) & (lengths > 0),
        step_model,
        step_sampling,
        cache,
        jnp.where((lengths > 0)[:, None], new_logits, generations.logits),  # finished: kept
        max_steps,
    )


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _copy_cache_rows(
    keys: jax.Array,
    values: jax.Array,
    destinations: jax.Array,
    sources: jax.Array,
    count: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Rows destinations[j] <- rows sources[j] (axis 1) for j < count, in the donated buffers."""

    def body(j: jax.Array, arrays: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        def copy(x: jax.Array) -> jax.Array:
            row = jax.lax.dynamic_slice_in_dim(x, sources[j], 1, axis=1)
            return jax.lax.dynamic_update_slice_in_dim(x, row, destinations[j], axis=1)

        return copy(arrays[0]), copy(arrays[1])

    return jax.lax.fori_loop(0, count, body, (keys, values))


def gather_generations_in_place(generations: Generations, ancestors: np.ndarray) -> Generations:
    """`gather_generations`, copying only the KV-cache rows that change, in place.

    Consumes `generations`: its cache buffers are donated and must not be used afterwards.
    When every source row keeps itself (a_j = j whenever some row descends from j, as
    `ppl.samplers.host_smc` arranges), the copies never overwrite a row still to be read; other
    layouts fall back to `gather_generations`. Copying only the replaced rows costs a
    fraction of a full gather of a long cache (57 ms against 300 ms for 4 of 16 rows of
    SmolLM2 at 1088 positions on two CPU cores).
    """
    ancestors = np.asarray(ancestors)
    changed = np.flatnonzero(ancestors != np.arange(ancestors.shape[0]))
    if changed.size == 0:
        return generations
    sources = ancestors[changed]
    if np.any(ancestors[sources] != sources):  # a source is itself replaced: not in place
        return gather_generations(generations, jnp.asarray(ancestors))
    index = jnp.asarray(ancestors)
    rows = _gather_rows(generations, index)
    lengths = jnp.take(generations.cache.lengths, index)
    padded = np.zeros((2, ancestors.shape[0]), np.int32)
    padded[0, : changed.size], padded[1, : changed.size] = changed, sources
    keys, values = _copy_cache_rows(
        generations.cache.keys,
        generations.cache.values,
        jnp.asarray(padded[0]),
        jnp.asarray(padded[1]),
        jnp.int32(changed.size),
    )
    cache = generations.cache._replace(keys=keys, values=values, lengths=lengths)  # keeps a prefix
    return Generations(**rows, cache=cache)
