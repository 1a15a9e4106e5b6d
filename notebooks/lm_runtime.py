# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The language-model runtime
#
# Load the embedded default model (SmolLM2-135M-Instruct), sample from it, score text, and
# see the two facts the samplers build on: generation reports `log p` of every token under the
# model, and the KV cache's batch axis is the particle axis (`gather_cache` resamples it).
#
# Set `PPL_NOTEBOOK_TINY=1` to run everything on a tiny random model in seconds (the tests do).

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm import LanguageModel, SamplingParams, extend, gather_cache
from ppl.models.lm.tiny import tiny_language_model

if os.environ.get("PPL_NOTEBOOK_TINY") == "1":
    lm = tiny_language_model(jax.random.key(0))
else:
    lm = LanguageModel.load()
print(lm.name, lm.config)

# %% [markdown]
# ## Generate
# Greedy decoding, then eight samples of one prompt: the prompt is prefilled once and its
# cache fanned out to eight rows that decode together, each stopping on its own.

# %%
greedy = lm.generate(
    jax.random.key(0),
    ["What is the capital of France?"],
    chat=True,
    max_new_tokens=32,
    sampling=SamplingParams(temperature=0.0),
)
print(greedy.texts[0])

samples = lm.generate(
    jax.random.key(1),
    ["Name a colour."],
    chat=True,
    num_samples=8,
    max_new_tokens=16,
    sampling=SamplingParams(temperature=0.8, top_p=0.95),
    stop=["\n"],
)
for text, reason, logp in zip(
    samples.texts, samples.finish_reasons, samples.model_logprobs, strict=True
):
    print(f"{logp:8.2f}  {reason:6}  {text!r}")

# %% [markdown]
# ## Score
# `score` gives log p(continuation | prompt). Scoring the samples reproduces the log-probabilities
# that generation reported: the two paths agree to float32 precision.

# %%
prompt_ids = lm.encode_prompts(["Name a colour."] * 8, chat=True)
scores = lm.score_tokens(prompt_ids, samples.token_ids)
gap = np.max(np.abs(scores.total - samples.model_logprobs))
print(f"largest difference: {gap:.2e}")
assert gap < 1e-3

# %% [markdown]
# ## Resampling gathers the cache
# Keep rows 0, 0, 3, 5, ... of the batch (as a resampling step would) with one gather, then
# extend every row by one token: the result equals running each kept prefix from scratch.

# %%
ancestors = jnp.asarray([0, 0, 3, 5, 5, 5, 6, 7])
cache = gather_cache(samples.output.cache, ancestors)
next_token = jnp.full((8, 1), lm.tokenizer.encode(" ", add_special_tokens=False)[0], jnp.int32)
logits, cache = extend(lm.params, lm.config, next_token, jnp.ones(8, jnp.int32), cache)
row = 2  # a copy of sample 3
sequence = prompt_ids[3] + samples.token_ids[3] + [int(next_token[row, 0])]
gap = np.max(np.abs(np.asarray(logits[row, 0]) - np.asarray(lm.logits(sequence)[-1])))
print(f"largest logit difference: {gap:.2e}")
assert gap < 1e-3
