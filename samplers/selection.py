"""Final-answer selection among N candidates for one problem.

Every rule takes integer answer ids [N] (equal answers share an id; -1 means the candidate
gave no answer) and per-candidate scores [N] (log weights or rewards, NumPy or JAX arrays)
and returns the selected answer id, or -1 when no candidate has an answer. Candidates
without an answer never vote and are never selected. They run on the host, after inference.

Ties are broken deterministically: between candidates, the lowest candidate index wins;
between answers, the one with more votes wins (for the weighted rules) and then the smallest
answer id (with `ppl.models.reasoning.answers.answer_ids`, the answer that appeared first).

NaN scores are treated as -inf (weight zero, lowest reward) with a `RuntimeWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import jax
import numpy as np
from numpy.typing import ArrayLike

AnswerSelection = Callable[[jax.Array, ArrayLike, ArrayLike], int]
"""The registry's common signature: (rng_key, answer_ids, scores) -> answer id."""


def _validated(answer_ids: ArrayLike, scores: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(answer_ids)
    if ids.ndim != 1:
        raise ValueError(f"answer_ids must be 1-D [N], got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"answer_ids must be integers (-1 for no answer), got dtype {ids.dtype}")
    if ids.size and ids.min() < -1:
        raise ValueError(f"answer_ids must be >= -1 (-1 for no answer), got {ids.min()}")
    if scores is None:
        return ids.astype(np.int64), np.zeros(ids.shape, np.float64)
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != ids.shape:
        raise ValueError(
            f"scores must have the shape of answer_ids {ids.shape}, got shape {values.shape}"
        )
    if np.isnan(values).any():
        warnings.warn(
            f"{int(np.isnan(values).sum())} NaN score(s) treated as -inf",
            RuntimeWarning,
            stacklevel=3,
        )
        values = np.where(np.isnan(values), -np.inf, values)
    return ids.astype(np.int64), values


def _no_positive_infinity(values: np.ndarray) -> None:
    if np.isposinf(values).any():
        raise ValueError("log_weights must be finite or -inf (weight zero), got +inf")


def _first_argmax(values: np.ndarray) -> int:
    """Index of the largest value, the lowest index among equal ones (-inf included)."""
    return int(np.flatnonzero(values == values.max())[0])


def _vote_counts(ids: np.ndarray) -> np.ndarray:
    answered = ids[ids >= 0]
    return np.bincount(answered, minlength=int(answered.max()) + 1)


def argmax_weight(answer_ids: ArrayLike, log_weights: ArrayLike) -> int:
    """Best-of-N: the answer of the answered candidate with the largest weight (or reward),
    i* = argmax_{i: a_i != -1} log w_i; the lowest index wins ties."""
    ids, values = _validated(answer_ids, log_weights)
    answered = np.flatnonzero(ids >= 0)
    if answered.size == 0:
        return -1
    return int(ids[answered[_first_argmax(values[answered])]])


def majority_vote(answer_ids: ArrayLike, log_weights: ArrayLike | None = None) -> int:
    """Self-consistency: the most frequent answer, argmax_a #{i: a_i = a}; the smallest answer
    id wins ties. `log_weights` is accepted for a common signature and ignored."""
    ids, _ = _validated(answer_ids, None)
    if not (ids >= 0).any():
        return -1
    return _first_argmax(_vote_counts(ids))


def weighted_vote(answer_ids: ArrayLike, log_weights: ArrayLike) -> int:
    """Weighted majority: the answer with the largest total normalised weight,
    argmax_a Σ_{i: a_i = a} W_i with W_i = w_i / Σ_j w_j (computed as a log-sum-exp per
    answer). To vote with raw rewards r_i >= 0 (weighted best-of-N), pass log r_i. Ties
    (including every answered weight zero) go to the answer with more votes, then to the
    smallest answer id."""
    ids, values = _validated(answer_ids, log_weights)
    _no_positive_infinity(values)
    if not (ids >= 0).any():
        return -1
    counts = _vote_counts(ids)
    answered = ids >= 0
    totals = np.full(counts.size, -np.inf)
    for answer in np.flatnonzero(counts):
        members = values[answered & (ids == answer)]
        top = members.max()
        if np.isfinite(top):
            totals[answer] = top + np.log(np.sum(np.exp(members - top)))
    best = totals == totals.max()
    return _first_argmax(np.where(best, counts, -1))


def sample_by_weight(rng_key: jax.Array, answer_ids: ArrayLike, log_weights: ArrayLike) -> int:
    """The answer of one candidate drawn with probability W_i = w_i / Σ_{j answered} w_j among
    the answered candidates (uniformly among them if all their weights are zero). One uniform
    draw u from `rng_key` picks the first i with u Σ w < Σ_{j<=i} w_j."""
    ids, values = _validated(answer_ids, log_weights)
    _no_positive_infinity(values)
    answered = np.flatnonzero(ids >= 0)
    if answered.size == 0:
        return -1
    logs = values[answered]
    top = logs.max()
    weights = np.exp(logs - top) if np.isfinite(top) else np.ones_like(logs)
    cumulative = np.cumsum(weights)
    u = float(jax.random.uniform(rng_key))
    index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    return int(ids[answered[min(index, answered.size - 1)]])


def best_of_majority(
    answer_ids: ArrayLike,
    rewards: ArrayLike,
    min_frequency: float = 0.1,
    max_answers: int | None = None,
) -> int:
    """Best-of-Majority (BoM; Di et al. 2025, "Best-of-Majority: Minimax-Optimal Strategy
    for Pass@k Inference Scaling", arXiv:2510.03199), for one submitted answer (k = 1).

    BoM restricts the candidates to the responses that are frequent among the N samples and
    then returns the one with the highest reward. The rule implemented:

    1. frequencies f(a) = #{i: a_i = a} / N over all N candidates (unanswered ones count in N);
    2. the kept answers A = {a: f(a) >= min_frequency}; if `max_answers` is given, only the
       `max_answers` most frequent of them (equal counts: smaller id first); if A is empty
       (the threshold is above every frequency), A = the most frequent answers;
    3. i* = argmax_{i: a_i in A} r_i (lowest index on ties); return a_{i*}.

    With min_frequency <= 1/N and no `max_answers` this is best-of-N; with `max_answers=1` it
    is majority voting (the reward breaks ties between equally frequent answers). The paper
    sets its threshold from the coverage coefficient, which is unknown in practice;
    `min_frequency=0.1` is a default, not a value from the paper.
    """
    ids, values = _validated(answer_ids, rewards)
    if not 0.0 <= min_frequency <= 1.0:
        raise ValueError(f"min_frequency must be in [0, 1], got {min_frequency}")
    if max_answers is not None and max_answers < 1:
        raise ValueError(f"max_answers must be >= 1 or None, got {max_answers}")
    if not (ids >= 0).any():
        return -1
    counts = _vote_counts(ids)
    present = np.flatnonzero(counts)
    kept = present[counts[present] >= min_frequency * ids.size]
    if kept.size == 0:
        kept = np.flatnonzero(counts == counts.max())
    if max_answers is not None:
        order = np.lexsort((kept, -counts[kept]))  # by count descending, then id ascending
        kept = kept[order[:max_answers]]
    candidates = np.flatnonzero(np.isin(ids, kept))
    return int(ids[candidates[_first_argmax(values[candidates])]])


def _deterministic(rule: Callable[[ArrayLike, ArrayLike], int]) -> AnswerSelection:
    def select(rng_key: jax.Array, answer_ids: ArrayLike, scores: ArrayLike) -> int:
        del rng_key
        return rule(answer_ids, scores)

    select.__name__ = rule.__name__
    select.__doc__ = rule.__doc__
    return select


ANSWER_SELECTIONS: dict[str, AnswerSelection] = {
    "argmax_weight": _deterministic(argmax_weight),
    "majority_vote": _deterministic(majority_vote),
    "weighted_vote": _deterministic(weighted_vote),
    "sample_by_weight": sample_by_weight,
    "best_of_majority": _deterministic(best_of_majority),
}
"""Name -> rule with the common signature (rng_key, answer_ids, scores) -> answer id; the
deterministic rules ignore the key, `best_of_majority` uses its default parameters."""
