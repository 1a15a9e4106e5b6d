"""Inference-scaling analysis: pass@k and coverage, power-law coverage fits, how much budget
one method needs to match another, and standard errors of accuracy.

Host-side NumPy; the inputs are counts and curves measured after inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

# ---------------------------------------------------------------------------------------------
# pass@k and coverage


def _integers(values: ArrayLike, name: str) -> np.ndarray:
    """`values` as int64, refusing NaN, inf and fractions (a count of 10.5 samples is a bug)."""
    array = np.asarray(values)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be integer counts, got {array.dtype} values")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise ValueError(f"{name} must be finite whole numbers, got {array.ravel()[:5]}")
    return array.astype(np.int64)


def _check_counts(num_samples: np.ndarray, num_correct: np.ndarray, k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if (num_correct < 0).any() or (num_correct > num_samples).any():
        raise ValueError("num_correct must satisfy 0 <= num_correct <= num_samples")
    if (num_samples < k).any():
        raise ValueError(f"pass@{k} needs num_samples >= k = {k}, got {num_samples.min()}")


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - Π_{j = n-c+1}^{n} (1 - k / j),

    the probability that k of the n samples drawn without replacement include a correct one;
    1 when n - c < k. The product is summed in log space and 1 - exp taken with expm1.
    """
    num_samples, num_correct = (
        int(_integers(num_samples, "num_samples")),
        int(_integers(num_correct, "num_correct")),
    )
    k = int(_integers(k, "k"))
    _check_counts(np.asarray(num_samples), np.asarray(num_correct), k)
    if num_samples - num_correct < k:
        return 1.0
    j = np.arange(num_samples - num_correct + 1, num_samples + 1, dtype=np.float64)
    return float(-np.expm1(np.sum(np.log1p(-k / j))))


def pass_at_k_per_problem(num_samples: ArrayLike, num_correct: ArrayLike, k: int) -> np.ndarray:
    """`pass_at_k` for many problems at once: `num_correct` [P] (and `num_samples`, a scalar
    or [P]). Uses the cumulative sums S(m) = Σ_{j=k+1}^{m} log(1 - k/j), so that
    log C(n-c, k)/C(n, k) = S(n) - S(n - c) when n - c >= k."""
    correct = _integers(num_correct, "num_correct")
    samples = _integers(num_samples, "num_samples")
    k = int(_integers(k, "k"))
    if correct.ndim != 1 or samples.ndim > 1 or samples.shape not in ((), correct.shape):
        raise ValueError(
            f"num_correct must be [P] and num_samples a scalar or [P], got shapes "
            f"{correct.shape} and {samples.shape}"
        )
    samples = np.broadcast_to(samples, correct.shape)
    _check_counts(samples, correct, k)
    if correct.size == 0:
        return np.zeros(correct.shape)
    j = np.arange(k + 1, int(samples.max()) + 1, dtype=np.float64)
    cumulative = np.concatenate([np.zeros(k + 1), np.cumsum(np.log1p(-k / j))])  # index m
    wrong = samples - correct
    reachable = wrong >= k
    log_ratio = cumulative[samples] - cumulative[np.where(reachable, wrong, k)]
    return np.where(reachable, -np.expm1(log_ratio), 1.0)


def coverage_curve(
    num_samples: ArrayLike, num_correct_per_problem: ArrayLike, ks: Sequence[int]
) -> np.ndarray:
    """Coverage at each k in `ks`: the mean over problems of pass@k, [len(ks)]."""
    return np.array(
        [pass_at_k_per_problem(num_samples, num_correct_per_problem, int(k)).mean() for k in ks]
    )


# ---------------------------------------------------------------------------------------------
# Power-law coverage


class PowerLawFit(NamedTuple):
    """coverage(k) ≈ exp(a k^b), a < 0 (and b < 0 when coverage grows with k)."""

    a: float
    b: float
    num_points: int  # the points the fit used

    def predict(self, ks: ArrayLike) -> np.ndarray:
        return np.exp(self.a * np.asarray(ks, dtype=np.float64) ** self.b)


def fit_power_law_coverage(ks: ArrayLike, coverage: ArrayLike) -> PowerLawFit:
    """Large Language Monkeys' exponentiated power law, coverage(k) ≈ exp(a k^b), fitted by
    least squares of the line

        log(-log c_k) = log(-a) + b log k.

    Points with coverage 0 or 1 have no finite log(-log c) and are dropped; at least two
    points with different k must remain. Coverage outside [0, 1] or not finite is an error.
    """
    ks_array = np.asarray(ks, dtype=np.float64)
    values = np.asarray(coverage, dtype=np.float64)
    if ks_array.ndim != 1 or ks_array.shape != values.shape:
        raise ValueError(
            f"ks and coverage must be 1-D of equal length, got {ks_array.shape}, {values.shape}"
        )
    if not np.isfinite(ks_array).all() or (ks_array <= 0).any():
        raise ValueError("ks must be positive and finite")
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"coverage must be finite values in [0, 1], got {values}")
    usable = (values > 0) & (values < 1)
    if np.unique(ks_array[usable]).size < 2:
        raise ValueError(
            "need at least two points with 0 < coverage < 1 and different k to fit a power law"
        )
    x = np.log(ks_array[usable])
    y = np.log(-np.log(values[usable]))
    slope, intercept = np.polyfit(x, y, 1)
    return PowerLawFit(a=float(-np.exp(intercept)), b=float(slope), num_points=int(usable.sum()))


# ---------------------------------------------------------------------------------------------
# Budget comparisons


def _curve(budgets: ArrayLike, accuracy: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(budgets, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    if b.ndim != 1 or b.shape != acc.shape or b.size == 0:
        raise ValueError(
            f"budgets and accuracy must be 1-D, non-empty, of equal length; got {b.shape}, "
            f"{acc.shape}"
        )
    if (b <= 0).any() or (np.diff(b) <= 0).any():
        raise ValueError("budgets must be positive and strictly increasing")
    if not np.isfinite(acc).all():
        raise ValueError("accuracy must be finite")
    return b, acc


def interpolate_accuracy(budgets: ArrayLike, accuracy: ArrayLike, budget: float) -> float:
    """A measured accuracy curve at `budget`, linear in log budget between measured points;
    `budget` must lie within the measured range."""
    b, acc = _curve(budgets, accuracy)
    if not b[0] <= budget <= b[-1]:
        raise ValueError(f"budget {budget} is outside the measured range [{b[0]}, {b[-1]}]")
    return float(np.interp(np.log(budget), np.log(b), acc))


def matching_budget(
    budgets_a: ArrayLike, accuracy_a: ArrayLike, target_accuracy: float
) -> float | None:
    """The smallest budget at which curve A reaches `target_accuracy`: with i the first
    measured point where acc_i >= target,

        log B = log b_{i-1} + (target - acc_{i-1}) / (acc_i - acc_{i-1}) (log b_i - log b_{i-1}),

    or b_0 when i = 0 (no extrapolation below the smallest measured budget). None if the curve
    never reaches the target."""
    b, acc = _curve(budgets_a, accuracy_a)
    reached = np.flatnonzero(acc >= target_accuracy)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(b[0])
    fraction = (target_accuracy - acc[i - 1]) / (acc[i] - acc[i - 1])
    return float(np.exp(np.log(b[i - 1]) + fraction * (np.log(b[i]) - np.log(b[i - 1]))))


def budget_ratio(
    budgets_a: ArrayLike,
    accuracy_a: ArrayLike,
    budgets_b: ArrayLike,
    accuracy_b: ArrayLike,
    at_budget: float,
) -> float | None:
    """How many times less budget method A needs to match method B at `at_budget`:

        ratio = at_budget / matching_budget(A, acc_B(at_budget)),

    with acc_B interpolated in log budget. ratio > 1 means A is more budget-efficient (Puri
    et al. 2025's "4-16x better scaling rate"). None if A never reaches that accuracy. When A
    already reaches it at its smallest measured budget the ratio is a lower bound."""
    target = interpolate_accuracy(budgets_b, accuracy_b, at_budget)
    matched = matching_budget(budgets_a, accuracy_a, target)
    return None if matched is None else float(at_budget / matched)


def budget_ratio_interval(
    rng: np.random.Generator,
    budgets_a: ArrayLike,
    correct_a: ArrayLike,
    budgets_b: ArrayLike,
    correct_b: ArrayLike,
    at_budget: float,
    num_resamples: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """A paired bootstrap interval for `budget_ratio`, over the P problems both methods ran:
    `correct_a` [P, len(budgets_a)] and `correct_b` [P, len(budgets_b)] hold each problem's
    outcome (0/1) at each budget, row p the same problem for both. Each resample draws P
    problems with replacement, recomputes both accuracy curves and the ratio (0 where A never
    reaches B's accuracy), and the interval is the resamples' central `confidence` quantiles.
    The comparison is decided only where the interval excludes 1."""
    a = np.asarray(correct_a, np.float64)
    b = np.asarray(correct_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0] or a.shape[0] == 0:
        raise ValueError(
            f"correct_a and correct_b must be [P, budgets] over the same P > 0 problems, got "
            f"{a.shape}, {b.shape}"
        )
    if num_resamples < 1 or not 0 < confidence < 1:
        raise ValueError("num_resamples must be >= 1 and confidence in (0, 1)")
    rows = rng.integers(0, a.shape[0], size=(num_resamples, a.shape[0]))
    ratios = np.empty(num_resamples)
    for r, sample in enumerate(rows):
        ratio = budget_ratio(
            budgets_a, a[sample].mean(axis=0), budgets_b, b[sample].mean(axis=0), at_budget
        )
        ratios[r] = 0.0 if ratio is None else ratio
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Uncertainty


def accuracy_standard_error(correct: ArrayLike) -> float:
    """Standard error of the mean accuracy over P problems, `correct` [P] in [0, 1]:

        SE = sqrt(mean((x - x̄)²) / P),

    which for 0/1 outcomes is the binomial sqrt(p̂ (1 - p̂) / P)."""
    x = np.asarray(correct, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"correct must be 1-D and non-empty, got shape {x.shape}")
    if (x < 0).any() or (x > 1).any() or not np.isfinite(x).all():
        raise ValueError("correct must hold values in [0, 1]")
    return float(np.sqrt(np.mean((x - x.mean()) ** 2) / x.size))


def binomial_interval(
    num_correct: int, num_problems: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval for an accuracy of `num_correct` / `num_problems` (scipy's
    `binomtest(...).proportion_ci(method="wilson")`): unlike p̂ ± z SE it does not collapse to a
    point at 0 or 1 (0 of 10 gives [0, 0.28])."""
    from scipy.stats import binomtest

    if num_problems < 1 or not 0 <= num_correct <= num_problems:
        raise ValueError(
            f"need 0 <= num_correct <= num_problems >= 1, got {num_correct}, {num_problems}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    interval = binomtest(num_correct, num_problems).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def curve_rises(accuracy: ArrayLike, standard_error: ArrayLike, z: float = 1.96) -> bool:
    """Whether an accuracy curve rises above its own noise: its best point exceeds its worst
    by more than z standard errors of the difference,

        max(acc) - min(acc) > z sqrt(SE_max² + SE_min²)

    (a two-sided two-proportion z-test at 5% for z = 1.96). A budget ratio between two curves
    says something only when both rise; a flat curve (all zero, all one, or within its noise)
    matches any accuracy it happens to touch."""
    acc = np.asarray(accuracy, dtype=np.float64)
    se = np.asarray(standard_error, dtype=np.float64)
    if acc.ndim != 1 or acc.shape != se.shape or acc.size == 0:
        raise ValueError(
            f"accuracy and standard_error must be 1-D of equal length, got {acc.shape}, {se.shape}"
        )
    if not (np.isfinite(acc).all() and np.isfinite(se).all()) or (se < 0).any():
        raise ValueError(
            f"accuracy and standard_error must be finite (and SE >= 0), got {acc}, {se}"
        )
    high, low = int(np.argmax(acc)), int(np.argmin(acc))
    return bool(acc[high] - acc[low] > z * np.hypot(se[high], se[low]))
