"""Scaling analysis against exact answers: pass@k against enumeration of k-subsets (and its
unbiasedness by simulation), power-law fits on noiseless data, budget matching on hand-made
curves, and the binomial standard error."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ppl.scaling import (
    PowerLawFit,
    accuracy_standard_error,
    binomial_interval,
    budget_ratio,
    budget_ratio_interval,
    coverage_curve,
    curve_rises,
    fit_power_law_coverage,
    interpolate_accuracy,
    matching_budget,
    pass_at_k,
    pass_at_k_per_problem,
)
from tests.monte_carlo import mean_z

Z_BOUND = 4.0


def enumerated_pass_at_k(n: int, c: int, k: int) -> float:
    """The fraction of k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(enumerated_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_closed_forms():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(100, 0, 50) == 0.0
    assert pass_at_k(10, 8, 3) == 1.0  # fewer than k wrong samples
    # tiny probabilities keep their relative precision: 1 - C(n-1, 1)/C(n, 1) = 1/n
    assert pass_at_k(10**7, 1, 1) == pytest.approx(1e-7, rel=1e-9)
    assert pass_at_k(1000, 10, 100) == pytest.approx(
        1 - math.comb(990, 100) / math.comb(1000, 100), rel=1e-10
    )


def test_pass_at_k_per_problem_matches_scalar():
    correct = np.array([0, 1, 5, 17, 63, 64])
    for k in (1, 2, 7, 32, 64):
        expected = [pass_at_k(64, int(c), k) for c in correct]
        np.testing.assert_allclose(pass_at_k_per_problem(64, correct, k), expected, atol=1e-12)
    samples = np.array([4, 10, 10])
    np.testing.assert_allclose(
        pass_at_k_per_problem(samples, [1, 2, 9], 3),
        [pass_at_k(4, 1, 3), pass_at_k(10, 2, 3), pass_at_k(10, 9, 3)],
        atol=1e-12,
    )


def test_pass_at_k_is_unbiased_by_simulation():
    """The mean over random k-draws without replacement equals the estimator."""
    rng = np.random.default_rng(0)
    n, c, k, draws = 20, 3, 4, 20_000
    hits = np.array([(rng.permutation(n)[:k] < c).any() for _ in range(draws)], dtype=float)
    assert abs(mean_z(hits[:, None], pass_at_k(n, c, k))[0]) < Z_BOUND


def test_pass_at_k_rejects_bad_counts():
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
    for n, c, k, name in [
        (10.5, 3, 2, "num_samples"),
        (10, 3, 2.5, "k"),
        (float("nan"), 3, 2, "num_samples"),
    ]:
        with pytest.raises(ValueError, match=f"{name} must be finite whole numbers"):
            pass_at_k(n, c, k)
    with pytest.raises(ValueError, match="num_correct must be integer counts"):
        pass_at_k_per_problem(8, ["1", "2"], 1)
    with pytest.raises(
        ValueError, match=r"num_samples a scalar or \[P\], got shapes \(1,\) and \(2,\)"
    ):
        pass_at_k_per_problem([10, 10], [1], 1)
    assert pass_at_k(10.0, 3.0, 2) == pass_at_k(10, 3, 2)  # whole floats are counts


def test_non_finite_curves_are_errors_not_dropped_points():
    with pytest.raises(ValueError, match="coverage must be finite values in"):
        fit_power_law_coverage([1, 2, 4], [0.1, float("nan"), 0.3])
    with pytest.raises(ValueError, match="coverage must be finite values in"):
        fit_power_law_coverage([1, 2, 4], [0.1, 0.2, 1.3])
    with pytest.raises(ValueError, match="must be finite"):
        curve_rises([0.1, float("nan")], [0.1, 0.1])


def test_coverage_curve_is_mean_pass_at_k():
    correct = np.array([0, 2, 8])
    curve = coverage_curve(8, correct, [1, 2, 8])
    np.testing.assert_allclose(curve[0], np.mean(correct / 8))
    np.testing.assert_allclose(curve[1], np.mean([0, pass_at_k(8, 2, 2), 1]))
    np.testing.assert_allclose(curve[2], 2 / 3)


@pytest.mark.parametrize(("a", "b"), [(-2.0, -0.5), (-0.7, -0.3), (-5.0, -1.2)])
def test_power_law_fit_recovers_noiseless_parameters(a, b):
    ks = np.array([1, 2, 4, 8, 16, 32, 64, 128])
    fit = fit_power_law_coverage(ks, np.exp(a * ks**b))
    assert fit.a == pytest.approx(a, rel=1e-9)
    assert fit.b == pytest.approx(b, rel=1e-9)
    assert fit.num_points == ks.size
    np.testing.assert_allclose(fit.predict([3, 1000]), np.exp(a * np.array([3, 1000.0]) ** b))


def test_power_law_fit_drops_zero_and_one():
    a, b = -1.5, -0.4
    ks = np.array([1, 2, 4, 8, 16, 32])
    coverage = np.exp(a * ks**b)
    coverage[0], coverage[-1] = 0.0, 1.0
    fit = fit_power_law_coverage(ks, coverage)
    assert fit.num_points == 4
    assert (fit.a, fit.b) == pytest.approx((a, b), rel=1e-9)
    with pytest.raises(ValueError, match="at least two points"):
        fit_power_law_coverage([1, 2, 4], [0.0, 1.0, 0.5])


def test_power_law_fit_is_a_named_tuple():
    fit = PowerLawFit(a=-1.0, b=-0.5, num_points=2)
    assert fit.predict(4.0) == pytest.approx(np.exp(-0.5))


BUDGETS = np.array([1, 2, 4, 8, 16, 32])


def test_matching_budget_on_hand_made_curves():
    accuracy = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # +0.1 per doubling
    assert matching_budget(BUDGETS, accuracy, 0.3) == pytest.approx(4.0)
    # halfway between 0.3 (budget 4) and 0.4 (budget 8) in log budget: sqrt(32)
    assert matching_budget(BUDGETS, accuracy, 0.35) == pytest.approx(math.sqrt(32))
    assert matching_budget(BUDGETS, accuracy, 0.05) == 1.0  # reached at the first point
    assert matching_budget(BUDGETS, accuracy, 0.61) is None
    # the first crossing counts, even if the curve dips later
    assert matching_budget(BUDGETS, [0.1, 0.5, 0.2, 0.2, 0.6, 0.7], 0.5) == pytest.approx(2.0)


def test_budget_ratio():
    accuracy_b = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    accuracy_a = accuracy_b + 0.2  # A is two doublings ahead: 4x less budget
    assert budget_ratio(BUDGETS, accuracy_a, BUDGETS, accuracy_b, 32) == pytest.approx(4.0)
    assert budget_ratio(BUDGETS, accuracy_a, BUDGETS, accuracy_b, 16) == pytest.approx(4.0)
    # B at sqrt(2) * 8 has accuracy 0.45; A reaches 0.45 at sqrt(2) * 2
    assert budget_ratio(
        BUDGETS, accuracy_a, BUDGETS, accuracy_b, 8 * math.sqrt(2)
    ) == pytest.approx(4.0)
    assert budget_ratio(BUDGETS, accuracy_b - 0.3, BUDGETS, accuracy_b, 32) is None
    assert interpolate_accuracy(BUDGETS, accuracy_b, 2 * math.sqrt(2)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="outside the measured range"):
        budget_ratio(BUDGETS, accuracy_a, BUDGETS, accuracy_b, 64)
    with pytest.raises(ValueError, match="strictly increasing"):
        matching_budget([1, 4, 2], [0.1, 0.2, 0.3], 0.2)


def test_accuracy_standard_error():
    correct = np.array([1, 0, 1, 1, 0, 1, 1, 1])
    p = correct.mean()
    assert accuracy_standard_error(correct) == pytest.approx(math.sqrt(p * (1 - p) / 8))
    assert accuracy_standard_error(np.ones(5)) == 0.0
    assert accuracy_standard_error([0.5, 0.5]) == 0.0
    with pytest.raises(ValueError):
        accuracy_standard_error([])
    with pytest.raises(ValueError):
        accuracy_standard_error([0.5, 2.0])


def test_binomial_interval_is_wilsons():
    # 0 of n: the Wilson upper bound is z^2 / (n + z^2) exactly
    z = 1.959963984540054
    low, high = binomial_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(z**2 / (10 + z**2), rel=1e-9)
    # k of n: centre (k + z^2/2) / (n + z^2), half-width z sqrt(k(n-k)/n + z^2/4) / (n + z^2)
    k, n = 6, 10
    centre = (k + z**2 / 2) / (n + z**2)
    half = z * np.sqrt(k * (n - k) / n + z**2 / 4) / (n + z**2)
    assert binomial_interval(k, n) == pytest.approx((centre - half, centre + half), rel=1e-9)
    with pytest.raises(ValueError, match="num_correct <= num_problems"):
        binomial_interval(11, 10)


def test_curve_rises_only_above_its_noise():
    assert not curve_rises([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])  # the all-zero curve
    assert not curve_rises([1.0, 1.0], [0.0, 0.0])
    assert curve_rises([0.2, 0.6, 0.8], [0.126, 0.155, 0.126])
    assert not curve_rises([0.2, 0.3], [0.126, 0.145])  # within the noise
    with pytest.raises(ValueError, match="equal length"):
        curve_rises([0.1, 0.2], [0.1])


def test_budget_ratio_interval_of_identical_problems_is_the_ratio():
    """Every resample of P copies of one problem is the same curves: the interval is the
    point ratio, 16 / 4 (A is right from N = 4, B from N = 16)."""
    a = np.tile([0.0, 1.0, 1.0], (12, 1))
    b = np.tile([0.0, 0.0, 1.0], (12, 1))
    low, high = budget_ratio_interval(np.random.default_rng(0), [1, 4, 16], a, [1, 4, 16], b, 16)
    assert (low, high) == pytest.approx((4.0, 4.0))


def test_budget_ratio_interval_decides_a_clear_difference_and_not_a_small_sample():
    rng = np.random.default_rng(1)

    def outcomes(problems, rates):
        return (rng.random((problems, len(rates))) < np.asarray(rates)).astype(float)

    budgets = [1, 4, 16]
    strong, weak = [0.5, 0.8, 0.9], [0.1, 0.3, 0.5]
    low, _ = budget_ratio_interval(
        rng, budgets, outcomes(400, strong), budgets, outcomes(400, weak), 16
    )
    assert low > 1  # A reaches B's accuracy at 16 already near N = 1
    low, high = budget_ratio_interval(
        rng, budgets, outcomes(6, [0.2, 0.4, 0.6]), budgets, outcomes(6, [0.2, 0.35, 0.55]), 16
    )
    assert low <= 1 <= high  # six problems decide nothing


def test_budget_ratio_interval_needs_the_same_problems():
    with pytest.raises(ValueError, match=r"same P > 0 problems, got \(3, 2\), \(4, 2\)"):
        budget_ratio_interval(
            np.random.default_rng(0), [1, 2], np.zeros((3, 2)), [1, 2], np.zeros((4, 2)), 2
        )
