"""Programmatic verifiers and wrappers: exact checks, error rates, consistency, validation."""

from __future__ import annotations

import numpy as np
import pytest

from ppl.models.reasoning.verifiers import (
    ArithmeticSteps,
    Candidates,
    Imperfect,
    OutcomeCorrect,
    Product,
    Softened,
    call_verifier,
)


def candidates(texts, finished=None, groups=None, prompts=None, last_steps=None):
    count = len(texts)
    return Candidates(
        prompts=prompts or ["q"] * count,
        texts=list(texts),
        last_steps=last_steps or list(texts),
        finished=np.asarray(finished if finished is not None else [True] * count),
        groups=np.asarray(groups if groups is not None else [0] * count),
        rows=np.arange(count),
    )


def test_arithmetic_steps_checks_only_the_latest_step():
    batch = candidates(
        ["1 + 1 = 3\n\n2 * 3 = 6", "x", "y"],
        last_steps=["2 * 3 = 6", "7 - 2 = 4", "no claims here"],
    )
    np.testing.assert_allclose(ArithmeticSteps(0.1)(batch), [0.9, 0.1, 0.9])


def test_outcome_correct_uses_the_reference_of_each_prompt():
    batch = candidates(
        ["The answer is 12.", "The answer is 12.", "so far", "The answer is 1,000."],
        finished=[True, True, False, True],
        groups=[0, 1, 0, 1],
    )
    np.testing.assert_allclose(OutcomeCorrect(("12", "1000"))(batch), [1, 0, 1, 1])


def test_softened_and_product():
    batch = candidates(["a", "b"])
    hard = lambda c: np.asarray([0.0, 1.0])  # noqa: E731
    np.testing.assert_allclose(Softened(hard, 0.1)(batch), [0.1, 0.9])
    np.testing.assert_allclose(
        Product((Softened(hard, 0.1), Softened(hard, 0.2)))(batch), [0.02, 0.72]
    )


@pytest.mark.parametrize(("false_positive", "false_negative"), [(0.2, 0.0), (0.0, 0.35)])
def test_imperfect_verifier_has_the_requested_error_rates(false_positive, false_negative):
    texts = [f"candidate {i}" for i in range(4000)]
    truth = np.arange(4000) % 2 == 0
    base = lambda c: truth.astype(float)  # noqa: E731
    verdicts = Imperfect(base, false_positive, false_negative, seed=3)(candidates(texts))
    for rate, judged, flipped_to in ((false_positive, ~truth, 1), (false_negative, truth, 0)):
        observed = np.mean(verdicts[judged] == flipped_to)
        error = np.sqrt(max(rate * (1 - rate), 1e-12) / judged.sum())
        assert abs(observed - rate) <= 4 * error + 1e-12


def test_imperfect_verdicts_are_a_fixed_function_of_the_candidate():
    verifier = Imperfect(lambda c: np.ones(len(c)), false_negative_rate=0.5, seed=1)
    first = verifier(candidates(["a", "b", "c", "d"] * 5))
    np.testing.assert_array_equal(first[:4], first[4:8])
    other_seed = Imperfect(verifier.verifier, false_negative_rate=0.5, seed=2)
    assert not np.array_equal(
        verifier(candidates([f"t{i}" for i in range(64)])),
        other_seed(candidates([f"t{i}" for i in range(64)])),
    )


def test_bad_outputs_and_rates_are_named():
    with pytest.raises(ValueError, match="outside"):
        call_verifier(lambda c: np.full(len(c), 1.5), candidates(["a"]))
    with pytest.raises(ValueError, match="shape"):
        call_verifier(lambda c: np.ones(3), candidates(["a"]))
    with pytest.raises(ValueError, match="false_positive_rate"):
        Imperfect(lambda c: c, false_positive_rate=1.5)
    nan = call_verifier(lambda c: np.asarray([np.nan]), candidates(["a"]))
    assert np.isnan(nan[0])


def test_registered_verifiers_build_from_a_spec():
    from ppl.models.reasoning import judge, self_certainty  # noqa: F401  (register theirs)
    from ppl.models.reasoning.self_certainty import SelfCertainty
    from ppl.models.reasoning.verifiers import VERIFIERS, VerifierSpec

    assert set(VERIFIERS) >= {"arithmetic", "outcome", "self_certainty", "judge"}  # and plugins
    assert VerifierSpec("arithmetic", epsilon=0.1).build(["1"], None) == ArithmeticSteps(0.1)
    assert VerifierSpec("outcome").build(["4", "5"], None) == OutcomeCorrect(("4", "5"))
    assert VerifierSpec("self_certainty").build([], None) == SelfCertainty()
    imperfect = VerifierSpec("outcome", false_positive_rate=0.2, epsilon=0.1).build(["4"], None)
    assert imperfect == Softened(Imperfect(OutcomeCorrect(("4",)), 0.2, 0.0), 0.1)
    assert VerifierSpec("outcome", false_negative_rate=0.1).label() == "outcome(fp=0.0,fn=0.1)"
    with pytest.raises(ValueError, match="unknown verifier 'oracle'; choose from arithmetic"):
        VerifierSpec("oracle").build([], None)
