"""Importance sampling against the exact posterior and evidence of a conjugate mixture problem."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

from ppl.gaussian_mixture import GaussianMixture, linear_gaussian_update, mixture
from ppl.models.amortized.tasks import LinearGaussianTask, Problem
from ppl.samplers import importance
from tests.monte_carlo import evidence_ratio_z

TASK = LinearGaussianTask(
    observation_matrix=jnp.array([[1.0, 0.5], [0.0, 1.0]]),
    noise_covariance=0.5 * jnp.eye(2),
    num_components=2,
    num_data=3,
)


def log_joint(problem: Problem):
    """log p(x) + Σ_n log N(y_n; H x, R): the unnormalised posterior of `problem`."""

    def logdensity_fn(x: jax.Array) -> jax.Array:
        log_likelihoods = multivariate_normal.logpdf(
            problem.data, TASK.observation_matrix @ x, TASK.noise_covariance
        )
        return problem.prior.log_prob(x) + jnp.sum(jnp.where(problem.mask, log_likelihoods, 0.0))

    return logdensity_fn


@jax.jit
def exact(problem: Problem) -> tuple[GaussianMixture, jax.Array]:
    """The exact posterior and log p(y), conditioning on the stacked observations."""
    num = problem.data.shape[0]
    stacked = jnp.tile(TASK.observation_matrix, (num, 1))
    noise = jnp.kron(jnp.eye(num), TASK.noise_covariance)
    return linear_gaussian_update(problem.prior, stacked, noise, problem.data.reshape(-1))


@partial(jax.jit, static_argnums=3)
def run_on(
    rng_key: jax.Array, problem: Problem, proposal: GaussianMixture, num_samples: int
) -> importance.ImportanceResult:
    """`importance.run` on the unnormalised posterior of `problem`, compiled."""
    return importance.run(rng_key, log_joint(problem), proposal, num_samples)


@pytest.fixture(scope="module")
def problem() -> Problem:
    return jax.jit(TASK.sample)(jax.random.key(3))


def overdispersed(posterior: GaussianMixture) -> GaussianMixture:
    """One Gaussian, off-centre by half a standard deviation, with 4x the posterior covariance."""
    covariance = posterior.covariance()
    shift = 0.5 * jnp.sqrt(jnp.diagonal(covariance))
    return mixture(jnp.ones(1), (posterior.mean() + shift)[None], 4 * covariance[None])


def test_evidence_is_unbiased_and_mean_consistent_with_a_wrong_proposal(problem):
    posterior, log_evidence = exact(problem)
    proposal = overdispersed(posterior)
    keys = jax.random.split(jax.random.key(0), 2000)
    runs = jax.vmap(run_on, (0, None, None, None))(keys, problem, proposal, 100)
    assert abs(evidence_ratio_z(np.asarray(runs.log_evidence), float(log_evidence))) < 3
    assert np.all(runs.num_nan == 0)

    result = run_on(jax.random.key(1), problem, proposal, 20_000)
    estimate = importance.posterior_mean(result)
    z = (estimate.mean - posterior.mean()) / estimate.standard_error
    assert np.all(np.abs(z) < 3), z
    # A wrong proposal costs effective samples (measured ESS/N = 0.35).
    assert 0.1 * 20_000 < result.ess < 0.9 * 20_000


def test_the_exact_posterior_as_proposal_has_zero_variance(problem):
    posterior, log_evidence = exact(problem)
    result = run_on(jax.random.key(2), problem, posterior, 1000)
    np.testing.assert_allclose(result.log_weights, log_evidence, atol=1e-4)
    np.testing.assert_allclose(result.log_evidence, log_evidence, atol=1e-5)
    assert result.ess > 0.999 * 1000


def test_a_too_narrow_proposal_loses_effective_samples(problem):
    posterior, _ = exact(problem)
    narrow = posterior._replace(cholesky=0.5 * posterior.cholesky)
    exact_ess = run_on(jax.random.key(4), problem, posterior, 1000).ess
    narrow_ess = run_on(jax.random.key(4), problem, narrow, 1000).ess
    assert narrow_ess < 0.5 * exact_ess


def test_generic_proposal_matches_the_mixture_version(problem):
    posterior, _ = exact(problem)
    ours = run_on(jax.random.key(5), problem, posterior, 64)

    @jax.jit
    def generic_on(rng_key: jax.Array) -> importance.ImportanceResult:
        return importance.run_with_proposal(
            rng_key, log_joint(problem), posterior.sample, posterior.log_prob, 64
        )

    generic = generic_on(jax.random.key(5))
    for a, b in zip(ours, generic, strict=True):
        np.testing.assert_allclose(a, b)


def test_nan_targets_get_zero_weight_and_are_counted():
    proposal = mixture(jnp.ones(1), jnp.zeros((1, 1)), jnp.ones((1, 1, 1)))

    def logdensity_fn(x: jax.Array) -> jax.Array:
        return jnp.where(x[0] > 0, jnp.nan, -0.5 * x[0] ** 2)

    result = jax.jit(importance.run, static_argnums=(1, 3))(
        jax.random.key(6), logdensity_fn, proposal, 1000
    )
    positive = np.asarray(result.samples[:, 0] > 0)
    assert int(result.num_nan) == positive.sum() > 0
    assert np.all(np.isneginf(result.log_weights[positive]))
    assert np.isfinite(result.log_evidence)
    with pytest.raises(ValueError, match="num_samples"):
        importance.run(jax.random.key(6), logdensity_fn, proposal, 0)
