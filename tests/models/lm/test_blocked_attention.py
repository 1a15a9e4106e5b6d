"""Blocked attention and the shared prompt prefix against the NumPy oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.lm import SamplingParams, extend, gather_cache, init_cache, prefill, transformer
from ppl.models.lm.cache import share_prefix
from ppl.models.lm.language_model import pad_batch
from tests.models.lm.numpy_reference import reference_logits

RNG = np.random.default_rng(0)
# lengths on both sides of the 64-position blocks, and very different from each other
LONG_PROMPTS = [RNG.integers(3, 250, n).tolist() for n in (3, 64, 70, 131)]
CHUNKS = [RNG.integers(3, 250, n).tolist() for n in (5, 1, 0, 3)]


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_qwen_lm"])
def test_rows_of_different_lengths_across_blocks(fixture, kernel, request, monkeypatch):
    """Through the row-attention kernel and through XLA's loop over blocks (its fallback)."""
    if not kernel:
        monkeypatch.setattr(transformer, "kernel_applies", lambda *arrays: False)
        jax.clear_caches()  # compiled steps of the kernel path must not be reused
    lm = request.getfixturevalue(fixture)
    tokens, lengths = pad_batch(LONG_PROMPTS, 16)
    _, cache = prefill(lm.params, lm.config, tokens, lengths, init_cache(lm.config, 4, 256))
    chunk_tokens, _ = pad_batch([c or [0] for c in CHUNKS], 16)
    num_new = jnp.asarray([len(c) for c in CHUNKS], jnp.int32)
    logits, cache = extend(lm.params, lm.config, chunk_tokens, num_new, cache)
    np.testing.assert_array_equal(
        cache.lengths, [len(p) + len(c) for p, c in zip(LONG_PROMPTS, CHUNKS, strict=True)]
    )
    for b, (prompt, chunk) in enumerate(zip(LONG_PROMPTS, CHUNKS, strict=True)):
        expected = reference_logits(lm.params, lm.config, prompt + chunk)[len(prompt) :]
        np.testing.assert_allclose(logits[b, : len(chunk)], expected, rtol=1e-4, atol=1e-4)


def test_share_prefix_keeps_lengths_and_capacity(tiny_lm):
    _, cache = tiny_lm.prefill([LONG_PROMPTS[3]], 256)
    shared = share_prefix(cache, 128, 5)
    assert (shared.prefix_length, shared.capacity, shared.batch_size) == (128, 256, 5)
    assert shared.keys.shape[3] == 128 and shared.prefix_keys.shape[2] == 128
    np.testing.assert_array_equal(shared.lengths, [131] * 5)
    np.testing.assert_array_equal(shared.prefix_keys, cache.keys[:, 0, :, :128])
    np.testing.assert_array_equal(shared.keys[:, 3, :, :3], cache.keys[:, 0, :, 128:131])


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_qwen_lm"])
def test_shared_prefix_extend_matches_oracle_and_per_row_path(fixture, request):
    lm = request.getfixturevalue(fixture)
    prompt = LONG_PROMPTS[3]
    logits, cache = lm.prefill_shared(prompt, 3, 256)
    assert cache.prefix_length == 128
    expected = reference_logits(lm.params, lm.config, prompt)[-1]
    np.testing.assert_allclose(logits, np.stack([expected] * 3), rtol=1e-4, atol=1e-4)
    chunks = [CHUNKS[0], CHUNKS[1], CHUNKS[3]]
    chunk_tokens, _ = pad_batch(chunks, 16)
    num_new = jnp.asarray([len(c) for c in chunks], jnp.int32)
    shared, shared_cache = extend(lm.params, lm.config, chunk_tokens, num_new, cache)
    _, per_row = lm.prefill([prompt], 256)
    per_row = gather_cache(per_row, jnp.zeros(3, jnp.int32))
    copied, _ = extend(lm.params, lm.config, chunk_tokens, num_new, per_row)
    np.testing.assert_array_equal(shared_cache.lengths, [len(prompt) + len(c) for c in chunks])
    for b, chunk in enumerate(chunks):
        expected = reference_logits(lm.params, lm.config, prompt + chunk)[len(prompt) :]
        np.testing.assert_allclose(shared[b, : len(chunk)], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(shared[b, : len(chunk)], copied[b, : len(chunk)], atol=1e-5)


def test_gather_after_shared_prefill_keeps_the_prefix(tiny_lm):
    prompt = LONG_PROMPTS[2]
    _, cache = tiny_lm.prefill_shared(prompt, 2, 256)
    steps = jnp.asarray([[11], [12]], jnp.int32)
    _, cache = extend(tiny_lm.params, tiny_lm.config, steps, jnp.ones(2, jnp.int32), cache)
    ancestors = jnp.asarray([1, 1, 0])
    gathered = gather_cache(cache, ancestors)
    assert gathered.prefix_keys is cache.prefix_keys and gathered.batch_size == 3
    next_tokens = jnp.asarray([[21], [22], [23]], jnp.int32)
    logits, _ = extend(
        tiny_lm.params, tiny_lm.config, next_tokens, jnp.ones(3, jnp.int32), gathered
    )
    for row, parent in enumerate(np.asarray(ancestors)):
        sequence = [*prompt, 11 + int(parent), 21 + row]
        expected = reference_logits(tiny_lm.params, tiny_lm.config, sequence)[-1]
        np.testing.assert_allclose(logits[row, 0], expected, rtol=1e-4, atol=1e-4)


def test_generate_with_shared_prompt_matches_per_row_prompts(tiny_lm):
    import jax

    prompt = "Sequential Monte Carlo methods approximate a sequence of distributions " * 2
    greedy = SamplingParams(temperature=0.0)
    key = jax.random.key(0)
    shared = tiny_lm.generate(key, [prompt], max_new_tokens=12, sampling=greedy, num_samples=3)
    assert shared.output.cache.prefix_length >= 64
    copied = tiny_lm.generate(key, [prompt] * 3, max_new_tokens=12, sampling=greedy)
    assert copied.output.cache.prefix_length == 0
    assert shared.token_ids == copied.token_ids and shared.texts == copied.texts
    np.testing.assert_allclose(shared.model_logprobs, copied.model_logprobs, atol=1e-4)
