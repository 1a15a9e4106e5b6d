"""The compiled decode loop: greedy against the oracle, stop conditions, finished rows,
reproducibility, and agreement between generated log-probabilities and scoring."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.lm import ContextLengthError, SamplingParams
from ppl.models.lm.decoding import FINISH_EOS, NO_TOKEN, decode
from ppl.models.lm.stopping import build_stop_automata
from tests.models.lm.numpy_reference import reference_logits


def test_greedy_generation_matches_oracle_argmax(tiny_lm):
    prompt = tiny_lm.encode_prompts(["the 12"])[0]
    result = tiny_lm.generate(
        jax.random.key(0), ["the 12"], max_new_tokens=10, sampling=SamplingParams(0.0)
    )
    sequence = list(prompt)
    for _ in range(10):
        sequence.append(
            int(np.argmax(reference_logits(tiny_lm.params, tiny_lm.config, sequence)[-1]))
        )
    generated = sequence[len(prompt) :]
    eos = tiny_lm.tokenizer.eos_token_ids[0]
    if eos in generated:
        generated = generated[: generated.index(eos) + 1]
    assert result.token_ids[0] == generated


def test_samples_are_reproducible_and_rows_differ(tiny_lm):
    kwargs = {"max_new_tokens": 12, "num_samples": 4}
    a = tiny_lm.generate(jax.random.key(7), ["hello"], **kwargs)
    b = tiny_lm.generate(jax.random.key(7), ["hello"], **kwargs)
    c = tiny_lm.generate(jax.random.key(8), ["hello"], **kwargs)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    assert len(set(map(tuple, a.token_ids))) > 1


def test_jit_and_eager_decode_agree(tiny_lm):
    logits, cache = tiny_lm.prefill([[3, 4, 5], [6, 7]], 32)
    args = (tiny_lm.params, tiny_lm.config, jax.random.key(3), cache, logits)
    kwargs = {
        "max_new_tokens": 5,
        "sampling": SamplingParams(1.0, top_k=50),
        "eos_token_ids": jnp.asarray([], jnp.int32),
        "stop": build_stop_automata([], [b""] * tiny_lm.config.vocab_size),
    }
    compiled = decode(*args, **kwargs)
    with jax.disable_jit():
        eager = decode(*args, **kwargs)
    np.testing.assert_array_equal(compiled.tokens, eager.tokens)


def test_generated_logprobs_equal_scores(tiny_lm):
    result = tiny_lm.generate(jax.random.key(1), ["ab", "the"], max_new_tokens=8, num_samples=2)
    prompts = tiny_lm.encode_prompts(["ab", "ab", "the", "the"])
    scores = tiny_lm.score_tokens(prompts, result.token_ids)
    np.testing.assert_allclose(scores.total, result.model_logprobs, rtol=1e-4, atol=1e-4)
    # temperature 1 without filters: sampling and model distributions coincide
    np.testing.assert_allclose(result.sampling_logprobs, result.model_logprobs, rtol=1e-5)


def test_eos_finishes_a_row_and_it_stops_changing(tiny_lm):
    eos = tiny_lm.tokenizer.eos_token_ids[0]
    logits, cache = tiny_lm.prefill([[3, 4, 5], [6, 7]], 32)
    logits = logits.at[0].set(-1e9).at[0, eos].set(0.0)  # row 0 must draw EOS first
    out = tiny_lm.decode(jax.random.key(0), cache, logits, 6, SamplingParams(1.0))
    assert int(out.finish_reason[0]) == FINISH_EOS
    assert out.tokens[0].tolist() == [eos] + [NO_TOKEN] * 5
    assert out.num_tokens.tolist()[0] == 1
    assert out.cache.lengths.tolist() == [4, 2 + int(out.num_tokens[1])]


def test_stop_string_ends_generation_after_the_string(tiny_lm):
    result = tiny_lm.generate(
        jax.random.key(5), ["x"], max_new_tokens=40, num_samples=16, stop=["a", "e"]
    )
    for text, reason in zip(result.texts, result.finish_reasons, strict=True):
        if reason == "stop":
            assert text.endswith(("a", "e")) and "a" not in text[:-1] and "e" not in text[:-1]
        else:
            assert "a" not in text and "e" not in text
    assert "stop" in result.finish_reasons


def test_decoding_past_the_cache_capacity_is_a_clear_error(tiny_lm):
    logits, cache = tiny_lm.prefill([[3, 4, 5]], 16)
    with pytest.raises(ContextLengthError, match="exceed the cache capacity 16"):
        tiny_lm.decode(jax.random.key(0), cache, logits, 14, SamplingParams(1.0))


def test_logits_that_do_not_match_the_cache_are_a_clear_error(tiny_lm):
    from ppl.models.lm import BatchShapeError

    logits, cache = tiny_lm.prefill([[3, 4, 5], [6, 7]], 32)
    with pytest.raises(BatchShapeError, match=r"expected \(2, 265\)"):
        tiny_lm.decode(jax.random.key(0), cache, logits[:1], 4, SamplingParams(1.0))


def test_max_new_tokens_bounds_every_row(tiny_lm):
    result = tiny_lm.generate(jax.random.key(2), ["x", "yy"], max_new_tokens=3, num_samples=3)
    assert all(len(ids) <= 3 for ids in result.token_ids)
    assert result.output.tokens.shape == (6, 3)


def test_prompt_longer_than_context_is_a_clear_error(tiny_lm):
    with pytest.raises(ContextLengthError, match="context length 256"):
        tiny_lm.generate(jax.random.key(0), ["a" * 250], max_new_tokens=10)


def test_mismatched_scoring_batch_is_a_clear_error(tiny_lm):
    from ppl.models.lm import BatchShapeError

    with pytest.raises(BatchShapeError, match="2 prompts but 1 continuations"):
        tiny_lm.score(["a", "b"], ["c"])


def test_chat_template_renders_and_generates(tiny_lm):
    text = tiny_lm.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|user|>hi<|eos|><|assistant|>"
    ids = tiny_lm.encode_prompts(["hi"], chat=True)[0]
    assert tiny_lm.tokenizer.decode(ids) == text
    assert tiny_lm.generate(jax.random.key(0), ["hi"], chat=True, max_new_tokens=4).texts
