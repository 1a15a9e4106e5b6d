"""Answer selection on hand-made cases (ties, unanswered candidates, all-None), and
sample_by_weight's frequencies against the weights (z-test at a fixed seed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.samplers.selection import (
    ANSWER_SELECTIONS,
    argmax_weight,
    best_of_majority,
    majority_vote,
    sample_by_weight,
    weighted_vote,
)

Z_BOUND = 4.0
NONE = [-1, -1, -1]
LOG_ZERO = -np.inf


def test_argmax_weight():
    assert argmax_weight([0, 1, 2], [0.1, 0.5, 0.3]) == 1
    assert argmax_weight([0, -1, 2], [0.1, 9.0, 0.3]) == 2  # unanswered never selected
    assert argmax_weight([3, 1, 2], [0.5, 0.5, 0.1]) == 3  # tie: lowest candidate index
    assert argmax_weight([2, 1], [LOG_ZERO, LOG_ZERO]) == 2
    assert argmax_weight(NONE, [1.0, 2.0, 3.0]) == -1
    assert argmax_weight(jnp.array([0, 1]), jnp.array([0.0, 1.0])) == 1  # JAX arrays


def test_majority_vote():
    assert majority_vote([0, 1, 1, 2, -1, -1, -1]) == 1  # unanswered never vote
    assert majority_vote([2, 1, 2, 1]) == 1  # tie: smallest answer id
    assert majority_vote([5]) == 5
    assert majority_vote(NONE) == -1
    assert majority_vote([0, 1, 1], [9.0, 0.0, 0.0]) == 1  # weights ignored


def test_weighted_vote():
    # answer 0: one heavy vote; answer 1: two light ones
    log_w = np.log([0.5, 0.2, 0.2, 0.1])
    assert weighted_vote([0, 1, 1, 2], log_w) == 0
    assert weighted_vote([0, 1, 1, 1], np.log([0.4, 0.2, 0.2, 0.2])) == 1
    # equal totals and equal counts: smallest id
    assert weighted_vote([1, 0], [0.0, 0.0]) == 0
    # all weights zero: majority decides
    assert weighted_vote([1, 0, 1], [LOG_ZERO] * 3) == 1
    # unanswered candidates carry no vote
    assert weighted_vote([-1, 0, 1], np.log([0.9, 0.04, 0.06])) == 1
    assert weighted_vote(NONE, [0.0, 0.0, 0.0]) == -1
    # invariant to a common shift of log weights (normalisation)
    assert weighted_vote([0, 1, 1], np.array([0.0, -0.4, -0.4]) + 700.0) == 1


def test_weighted_vote_ties_prefer_more_votes():
    # equal totals (a zero-weight vote adds exactly nothing); answer 1 has one more vote
    assert weighted_vote([0, 0, 1, 1, 1], [-0.3, -1.2, -0.3, -1.2, LOG_ZERO]) == 1
    assert weighted_vote([1, 1, 1, 0, 0], [-0.3, -1.2, LOG_ZERO, -0.3, -1.2]) == 1


def test_best_of_majority():
    ids = np.array([0, 0, 0, 1, 1, 2, -1, -1, -1, -1])
    rewards = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0])
    # frequencies over N = 10: 0.3, 0.2, 0.1
    assert best_of_majority(ids, rewards, min_frequency=0.0) == 2  # best-of-N
    assert best_of_majority(ids, rewards, min_frequency=0.1) == 2
    assert best_of_majority(ids, rewards, min_frequency=0.15) == 1  # drops answer 2
    assert best_of_majority(ids, rewards, min_frequency=0.3) == 0  # only answer 0 is kept
    assert best_of_majority(ids, rewards, min_frequency=0.9) == 0  # empty -> the mode
    assert best_of_majority(ids, rewards, min_frequency=0.0, max_answers=2) == 1
    assert best_of_majority(ids, rewards, min_frequency=0.0, max_answers=1) == 0
    assert best_of_majority(NONE, [0.0, 0.0, 0.0]) == -1


def test_best_of_majority_ties():
    # answers 0 and 1 equally frequent: the threshold fallback keeps both, reward decides
    assert best_of_majority([0, 1, 0, 1], [0.1, 0.7, 0.2, 0.3], min_frequency=1.0) == 1
    # max_answers=1 with equal counts keeps the smaller id
    assert best_of_majority([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.3], max_answers=1) == 0
    # equal rewards: lowest candidate index
    assert best_of_majority([2, 1, 1, 2], [0.5, 0.5, 0.5, 0.5]) == 2


def test_selection_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        argmax_weight([0, 1], [0.0])
    with pytest.raises(ValueError, match="1-D"):
        majority_vote([[0, 1]])
    with pytest.raises(ValueError, match="integers"):
        majority_vote([0.5, 1.0])
    with pytest.raises(ValueError, match=">= -1"):
        majority_vote([0, -2])
    with pytest.raises(ValueError, match=r"\+inf"):
        weighted_vote([0, 1], [0.0, np.inf])
    with pytest.raises(ValueError, match="min_frequency"):
        best_of_majority([0], [0.0], min_frequency=1.5)


def test_nan_scores_are_reported_and_lose():
    with pytest.warns(RuntimeWarning, match="NaN"):
        assert argmax_weight([0, 1], [np.nan, -5.0]) == 1
    with pytest.warns(RuntimeWarning, match="NaN"):
        assert weighted_vote([0, 1, 1], [0.0, np.nan, np.nan]) == 0


def test_sample_by_weight_frequencies_match_weights():
    ids = np.array([0, 1, -1, 1, 2, 3])
    weights = np.array([0.1, 0.2, 0.5, 0.3, 0.4, 0.0])  # the unanswered 0.5 never counts
    probabilities = np.array([0.1, 0.5, 0.4, 0.0])  # per answer, over answered weight 1.0
    keys = jax.random.split(jax.random.key(0), 2000)
    log_weights = np.log(weights, where=weights > 0, out=np.full(weights.shape, -np.inf))
    draws = np.array([sample_by_weight(key, ids, log_weights) for key in keys])
    indicators = draws[:, None] == np.arange(4)[None, :]
    frequencies = indicators.mean(axis=0)
    errors = np.sqrt(probabilities * (1 - probabilities) / draws.size)
    z = (frequencies[:3] - probabilities[:3]) / errors[:3]
    assert np.all(np.abs(z) < Z_BOUND), z
    assert frequencies[3] == 0.0  # zero weight: never drawn


def test_sample_by_weight_is_reproducible_and_handles_degenerate_weights():
    key = jax.random.key(7)
    ids, log_w = [0, 1, 2], np.log([0.2, 0.3, 0.5])
    assert sample_by_weight(key, ids, log_w) == sample_by_weight(key, ids, log_w)
    assert sample_by_weight(key, [4, -1], [0.0, 0.0]) == 4
    assert sample_by_weight(key, NONE, [0.0, 0.0, 0.0]) == -1
    # every answered weight zero: uniform over answered candidates
    draws = {
        sample_by_weight(k, [0, 1, -1], [LOG_ZERO, LOG_ZERO, 0.0])
        for k in jax.random.split(key, 50)
    }
    assert draws == {0, 1}


def test_registry_has_a_common_signature():
    key = jax.random.key(0)
    ids, scores = np.array([0, 1, 1, -1]), np.array([2.0, 0.0, 0.0, 5.0])
    expected = {
        "argmax_weight": 0,
        "majority_vote": 1,
        "weighted_vote": 0,
        "best_of_majority": 0,
    }
    assert set(expected) | {"sample_by_weight"} == set(ANSWER_SELECTIONS)
    for name, answer in expected.items():
        assert ANSWER_SELECTIONS[name](key, ids, scores) == answer, name
    assert ANSWER_SELECTIONS["sample_by_weight"](key, ids, scores) in {0, 1}
    assert ANSWER_SELECTIONS["weighted_vote"].__doc__ == weighted_vote.__doc__
