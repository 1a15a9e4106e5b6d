"""The JAX decoder against an independent NumPy oracle, and cache consistency."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.lm import extend, gather_cache, init_cache, prefill
from ppl.models.lm.language_model import pad_batch
from tests.models.lm.numpy_reference import reference_logits

PROMPTS = [[5, 17, 99, 3, 250, 8, 8, 41], [7, 260, 33], [100, 101, 102, 103, 104, 105]]


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_qwen_lm"])
def test_logits_match_numpy_oracle(fixture, request):
    lm = request.getfixturevalue(fixture)
    for tokens in PROMPTS:
        expected = reference_logits(lm.params, lm.config, tokens)
        np.testing.assert_allclose(lm.logits(tokens), expected, rtol=1e-4, atol=1e-4)


def test_padded_batch_prefill_matches_each_prompt(tiny_lm):
    tokens, lengths = pad_batch(PROMPTS, 16)
    cache = init_cache(tiny_lm.config, len(PROMPTS), 32)
    logits, cache = prefill(tiny_lm.params, tiny_lm.config, tokens, lengths, cache)
    np.testing.assert_array_equal(cache.lengths, [len(p) for p in PROMPTS])
    for b, prompt in enumerate(PROMPTS):
        expected = reference_logits(tiny_lm.params, tiny_lm.config, prompt)[-1]
        np.testing.assert_allclose(logits[b], expected, rtol=1e-4, atol=1e-4)


def test_extend_after_prefill_matches_full_sequence(tiny_lm):
    """Appending chunks of different lengths to cached prefixes equals running from scratch."""
    prefixes = [p[:3] for p in PROMPTS]
    chunks = [p[3:] for p in PROMPTS]
    tokens, lengths = pad_batch(prefixes, 16)
    _, cache = prefill(
        tiny_lm.params, tiny_lm.config, tokens, lengths, init_cache(tiny_lm.config, 3, 32)
    )
    chunk_tokens, chunk_lengths = pad_batch([c or [0] for c in chunks], 16)
    chunk_lengths = jnp.asarray([len(c) for c in chunks], jnp.int32)
    logits, cache = extend(tiny_lm.params, tiny_lm.config, chunk_tokens, chunk_lengths, cache)
    np.testing.assert_array_equal(cache.lengths, [len(p) for p in PROMPTS])
    for b, prompt in enumerate(PROMPTS):
        expected = reference_logits(tiny_lm.params, tiny_lm.config, prompt)[3:]
        np.testing.assert_allclose(logits[b, : len(chunks[b])], expected, rtol=1e-4, atol=1e-4)


def test_gather_then_decode_matches_recomputing_resampled_prefixes(tiny_lm):
    """After a gather by ancestors, next-token logits equal those of the prefixes from scratch."""
    tokens, lengths = pad_batch(PROMPTS, 16)
    _, cache = prefill(
        tiny_lm.params, tiny_lm.config, tokens, lengths, init_cache(tiny_lm.config, 3, 32)
    )
    ancestors = jnp.asarray([2, 0, 0, 1, 2])
    cache = gather_cache(cache, ancestors)
    next_tokens = jnp.asarray([[11], [12], [13], [14], [15]], jnp.int32)
    logits, cache = extend(
        tiny_lm.params, tiny_lm.config, next_tokens, jnp.ones(5, jnp.int32), cache
    )
    for row, parent in enumerate(np.asarray(ancestors)):
        sequence = [*PROMPTS[parent], int(next_tokens[row, 0])]
        expected = reference_logits(tiny_lm.params, tiny_lm.config, sequence)[-1]
        np.testing.assert_allclose(logits[row, 0], expected, rtol=1e-4, atol=1e-4)


def test_rows_with_zero_new_tokens_do_not_change(tiny_lm):
    tokens, lengths = pad_batch(PROMPTS[:2], 16)
    _, cache = prefill(
        tiny_lm.params, tiny_lm.config, tokens, lengths, init_cache(tiny_lm.config, 2, 32)
    )
    _, after = extend(
        tiny_lm.params, tiny_lm.config, jnp.asarray([[9], [9]]), jnp.asarray([0, 1]), cache
    )
    np.testing.assert_array_equal(after.lengths, [len(PROMPTS[0]), len(PROMPTS[1]) + 1])
    valid = len(PROMPTS[0])
    np.testing.assert_array_equal(after.keys[:, 0, :, :valid], cache.keys[:, 0, :, :valid])


def test_bfloat16_is_close_to_float32(tiny_lm):
    from ppl.models.lm import LanguageModel

    lm16 = LanguageModel(tiny_lm.config, tiny_lm.params, tiny_lm.tokenizer, dtype="bfloat16")
    full = jax.nn.log_softmax(tiny_lm.logits(PROMPTS[0]))
    half = jax.nn.log_softmax(lm16.logits(PROMPTS[0]))
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(half, full, atol=0.15)
