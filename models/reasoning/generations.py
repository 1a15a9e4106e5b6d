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

from models.lm.cache import KVCache, gather_cache
from models.lm.config import LlamaConfig
from models.lm.decoding import FINISH_EOS, NO_TOKEN, decode
from models.lm.params import Params
from models.lm.sampling import SamplingParams
from models.lm.stopping import StopAutomata

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
    finished: jax.Array  # [B] bool
    finish_reason: jax.Array  # [B] RUNNING / FINISHED_EOS / FINISHED_MAX_STEPS
    model_logprob: jax.Array  # [B] log p of the generated tokens under the untempered model
    sampling_logprob: jax.Array  # [B] log q of the generated tokens under the sampler
    step_model_logprob: jax.Array  # [B] log p of the latest step's tokens
    step_sampling_logprob: jax.Array  # [B] log q of the latest step's tokens
    cache: KVCache  # prompt and generated tokens, batch axis 1
    logits: jax.Array  # [B, V] next-token logits after each row's last token


def start_generations(cache: KVCache, logits: jax.Array, max_tokens: int) -> Generations:
    """Empty generations after prompts already in `cache` (next-token `logits` [B, V])."""
    batch = logits.shape[0]
    zeros_f = jnp.zeros((batch,), jnp.float32)
    zeros_i = jnp.zeros((batch,), jnp.int32)
    return Generations(
        tokens=jnp.full((batch, max_tokens), NO_TOKEN, jnp.int32),
        num_tokens=zeros_i,
        num_steps=zeros_i,
        step_start=zeros_i,
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
    rows = {
        name: jnp.take(value, ancestors, axis=0)
        for name, value in generations._asdict().items()
        if name != "cache"
    }
    return Generations(**rows, cache=gather_cache(generations.cache, ancestors))


@functools.partial(jax.jit, static_argnames=("config", "max_step_tokens", "max_steps", "sampling"))
def extend_generations(
    params: Params,
    config: LlamaConfig,
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
    num_steps = generations.num_steps + live
    eos = live & (out.finish_reason == FINISH_EOS)
    out_of_steps = live & ~eos & (num_steps >= max_steps)
    finish_reason = jnp.where(
        eos, FINISHED_EOS, jnp.where(out_of_steps, FINISHED_MAX_STEPS, generations.finish_reason)
    )
    step_model = jnp.sum(out.model_logprobs, axis=1)  # zeros for rows that did not run
    step_sampling = jnp.sum(out.sampling_logprobs, axis=1)
    return Generations(
        tokens=tokens,
        num_tokens=generations.num_tokens + out.num_tokens,
        num_steps=num_steps,
        step_start=jnp.where(live, generations.num_tokens, generations.step_start),
        finished=generations.finished | eos | out_of_steps,
        finish_reason=finish_reason,
        model_logprob=generations.model_logprob + step_model,
        sampling_logprob=generations.sampling_logprob + step_sampling,
        step_model_logprob=jnp.where(live, step_model, generations.step_model_logprob),
        step_sampling_logprob=jnp.where(live, step_sampling, generations.step_sampling_logprob),
        cache=out.cache,
        logits=out.last_logits,
    )
