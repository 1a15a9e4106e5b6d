"""Sampling filters against their definitions, and empirical frequencies against exact ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.lm.sampling import SamplingParams, filtered_logits, sample

LOGITS = jnp.asarray([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
NUM_DRAWS = 20_000
Z = 4.5  # per-cell z bound; with 6 cells and fixed seeds a correct sampler passes


def exact_distribution(sampling: SamplingParams) -> np.ndarray:
    """The filtered, tempered distribution, computed in NumPy from the definitions."""
    logits = np.asarray(LOGITS[0], np.float64) / sampling.temperature
    order = np.argsort(-logits)
    keep = np.ones_like(logits, bool)
    if sampling.top_k is not None:
        keep[order[sampling.top_k :]] = False
    if sampling.top_p is not None:
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        before = np.cumsum(probs[order]) - probs[order]
        keep[order[before >= sampling.top_p]] = False
    weights = np.where(keep, np.exp(logits - logits.max()), 0.0)
    return weights / weights.sum()


CASES = [
    SamplingParams(1.0),
    SamplingParams(0.5),
    SamplingParams(2.0, top_k=3),
    SamplingParams(1.0, top_p=0.8),
    SamplingParams(0.7, top_k=4, top_p=0.9),
]


@pytest.mark.parametrize("sampling", CASES, ids=str)
def test_empirical_frequencies_match_exact_distribution(sampling):
    exact = exact_distribution(sampling)
    logits = jnp.broadcast_to(LOGITS, (NUM_DRAWS, LOGITS.shape[1]))
    drawn = sample(jax.random.key(42), logits, sampling)
    counts = np.bincount(np.asarray(drawn.tokens), minlength=exact.size)
    freq = counts / NUM_DRAWS
    stderr = np.sqrt(exact * (1 - exact) / NUM_DRAWS)
    assert np.all(counts[exact == 0] == 0), "a filtered-out token was sampled"
    nonzero = exact > 0
    z = np.abs(freq[nonzero] - exact[nonzero]) / stderr[nonzero]
    assert np.all(z < Z), (freq, exact, z)


@pytest.mark.parametrize("sampling", CASES, ids=str)
def test_reported_logprobs(sampling):
    drawn = sample(jax.random.key(0), jnp.broadcast_to(LOGITS, (64, 6)), sampling)
    tokens = np.asarray(drawn.tokens)
    exact = exact_distribution(sampling)
    np.testing.assert_allclose(drawn.sampling_logprobs, np.log(exact[tokens]), rtol=1e-5)
    model = np.asarray(jax.nn.log_softmax(LOGITS[0]))
    np.testing.assert_allclose(drawn.model_logprobs, model[tokens], rtol=1e-5)


def test_filter_keeps_exactly_the_nucleus():
    kept = np.isfinite(np.asarray(filtered_logits(LOGITS, SamplingParams(1.0, top_p=0.8))[0]))
    assert kept.tolist() == (exact_distribution(SamplingParams(1.0, top_p=0.8)) > 0).tolist()
    assert kept.sum() == 3  # 0.52 + 0.19 < 0.8 <= 0.52 + 0.19 + 0.12


def test_greedy_is_argmax_with_zero_sampling_logprob():
    logits = jax.random.normal(jax.random.key(3), (8, 50))
    drawn = sample(jax.random.key(0), logits, SamplingParams(0.0))
    np.testing.assert_array_equal(drawn.tokens, np.argmax(logits, axis=-1))
    np.testing.assert_array_equal(drawn.sampling_logprobs, 0.0)


def test_same_key_same_draws_different_key_different_draws():
    logits = jnp.zeros((256, 100))
    a = sample(jax.random.key(1), logits, SamplingParams(1.0)).tokens
    b = sample(jax.random.key(1), logits, SamplingParams(1.0)).tokens
    c = sample(jax.random.key(2), logits, SamplingParams(1.0)).tokens
    np.testing.assert_array_equal(a, b)
    assert np.mean(np.asarray(a) == np.asarray(c)) < 0.1


@pytest.mark.parametrize(
    "bad", [{"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_invalid_sampling_params_are_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.99])
def test_nucleus_of_a_large_flat_vocabulary_uses_bisection_and_is_exact(top_p):
    """Beyond the top-64 fast path: the bisection must keep exactly the sorted-order nucleus."""
    logits = jax.random.normal(jax.random.key(5), (4, 3000)) * 0.5
    kept = np.isfinite(np.asarray(filtered_logits(logits, SamplingParams(1.0, top_p=top_p))))
    for row in range(4):
        x = np.asarray(logits[row], np.float64)
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        before = np.cumsum(probs[order]) - probs[order]
        expected = np.zeros(x.size, bool)
        expected[order[before < top_p]] = True
        assert kept[row].sum() > 64 or top_p == 0.3
        # float32 against float64 may differ only at the boundary token
        assert np.sum(kept[row] != expected) <= 1
