"""Bridge sampling against the exact log evidence of the conjugate problems, from exact posterior
draws on the unconstrained space (the logit of p for beta_binomial)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import pytest
from scipy import special

from ppl.bridge_sampling import BridgeSamplingResult, log_evidence
from ppl.models.bayes.conjugate import ConjugateProblem, conjugate_problems
from ppl.numpyro_bridge import from_numpyro

PROBLEMS = {problem.name: problem for problem in conjugate_problems(jax.random.key(0))}
REGRESSION_HYPERPARAMETERS = {"prior_sd": 1.0, "noise_sd": 0.5}  # linear_regression's defaults


def exact_draws(problem: ConjugateProblem, num_draws: int, seed: int) -> np.ndarray:
    """Independent draws [num_draws, d] from the exact posterior, on the unconstrained space."""
    rng = np.random.default_rng(seed)
    if problem.name == "normal_normal":
        mean, sd = float(problem.posterior_mean["mu"]), float(problem.posterior_sd["mu"])
        return rng.normal(mean, sd, (num_draws, 1))
    if problem.name == "beta_binomial":
        mean, sd = float(problem.posterior_mean["p"]), float(problem.posterior_sd["p"])
        concentration = mean * (1 - mean) / sd**2 - 1  # Beta(a, b) from its mean and variance
        p = rng.beta(mean * concentration, (1 - mean) * concentration, num_draws)
        return special.logit(p)[:, None]
    X = np.asarray(problem.data["X"], np.float64)
    y = np.asarray(problem.data["y"], np.float64)
    prior_sd, noise_sd = REGRESSION_HYPERPARAMETERS.values()
    precision = np.eye(X.shape[1]) / prior_sd**2 + X.T @ X / noise_sd**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ X.T @ y / noise_sd**2
    np.testing.assert_allclose(mean, problem.posterior_mean["weights"], rtol=1e-10)
    return rng.multivariate_normal(mean, covariance, num_draws)


def flat_log_joint(problem: ConjugateProblem) -> Callable[[jax.Array], jax.Array]:
    """log p(y, u) with the Jacobian of u -> constrained, on flat vectors."""
    model = from_numpyro(problem.model, rng_key=jax.random.key(1), model_kwargs=problem.data)
    return lambda flat: model.logdensity_fn(model.unravel(flat))


def estimate(problem: ConjugateProblem, num_draws: int, seed: int = 0) -> BridgeSamplingResult:
    return log_evidence(
        jax.random.key(seed), flat_log_joint(problem), exact_draws(problem, num_draws, seed)
    )


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_matches_the_exact_log_evidence(name):
    problem = PROBLEMS[name]
    with jax.enable_x64(True):
        result = estimate(problem, 4000)
    error = abs(result.log_evidence - problem.log_evidence)
    assert result.standard_error > 0
    assert error < 4 * result.standard_error, (result, problem.log_evidence)
    assert error < 0.05, (result, problem.log_evidence)
    assert 1 < result.iterations < 1000


def test_standard_error_shrinks_with_more_draws():
    problem = PROBLEMS["linear_regression"]
    with jax.enable_x64(True):
        small = estimate(problem, 400, seed=1)
        large = estimate(problem, 6400, seed=2)
    assert 0 < large.standard_error < small.standard_error / 2  # ∝ 1/√N: a factor of 4


def test_a_constant_shift_of_the_log_density_shifts_the_estimate_by_it():
    problem = PROBLEMS["beta_binomial"]
    c = 3.75
    draws = exact_draws(problem, 2000, 3)
    with jax.enable_x64(True):
        log_joint = flat_log_joint(problem)
        right = log_evidence(jax.random.key(3), log_joint, draws)
        wrong = log_evidence(jax.random.key(3), lambda u: log_joint(u) + c, draws)
    assert wrong.log_evidence - right.log_evidence == pytest.approx(c, abs=1e-8)
    assert wrong.standard_error == pytest.approx(right.standard_error, rel=1e-6)
    assert abs(wrong.log_evidence - problem.log_evidence) > 3.0  # the exact check would fail


def test_autocorrelated_draws_get_a_larger_standard_error():
    """An AR(1) chain with the exact stationary posterior: fewer effective draws than iid."""
    problem = PROBLEMS["normal_normal"]
    mean, sd = float(problem.posterior_mean["mu"]), float(problem.posterior_sd["mu"])
    rng = np.random.default_rng(4)
    rho, num_draws = 0.95, 4000
    chain = np.empty(num_draws)
    chain[0] = rng.normal()
    for t in range(1, num_draws):
        chain[t] = rho * chain[t - 1] + np.sqrt(1 - rho**2) * rng.normal()
    with jax.enable_x64(True):
        log_joint = flat_log_joint(problem)
        correlated = log_evidence(jax.random.key(4), log_joint, (mean + sd * chain)[:, None])
        independent = log_evidence(jax.random.key(4), log_joint, exact_draws(problem, num_draws, 4))
    assert correlated.standard_error > 1.5 * independent.standard_error
    assert abs(correlated.log_evidence - problem.log_evidence) < 4 * correlated.standard_error


def test_warns_when_the_fixed_point_has_not_converged():
    problem = PROBLEMS["normal_normal"]
    with jax.enable_x64(True), pytest.warns(RuntimeWarning, match="did not converge"):
        result = log_evidence(
            jax.random.key(5),
            flat_log_joint(problem),
            exact_draws(problem, 200, 5),
            max_iterations=1,
        )
    assert result.iterations == 1


def test_rejects_too_few_draws_and_wrong_shapes():
    log_joint = flat_log_joint(PROBLEMS["linear_regression"])
    with pytest.raises(ValueError, match="too few"):
        log_evidence(jax.random.key(0), log_joint, np.zeros((8, 3)))
    with pytest.raises(ValueError, match=r"\[num_draws, d\]"):
        log_evidence(jax.random.key(0), log_joint, np.zeros(100))
