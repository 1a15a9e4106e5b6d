"""Gaussian mixtures against scipy densities and grid quadrature (exact oracles)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ppl.gaussian_mixture import (
    kl_divergence,
    linear_gaussian_predict,
    linear_gaussian_update,
    mixture,
)
from ppl.models.ssm.linear_gaussian import LinearGaussian, kalman_filter, simulate
from tests.monte_carlo import mean_z

WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[-2.0, 0.0], [1.0, 1.5], [0.5, -1.0]])
COVARIANCES = np.array(
    [[[1.0, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 0.8]], [[2.0, 0.0], [0.0, 0.3]]]
)


def scipy_density(x: np.ndarray) -> np.ndarray:
    return sum(
        w * stats.multivariate_normal.pdf(x, m, c)
        for w, m, c in zip(WEIGHTS, MEANS, COVARIANCES, strict=True)
    )


@pytest.fixture
def prior():
    return mixture(jnp.asarray(WEIGHTS * 7.0), jnp.asarray(MEANS), jnp.asarray(COVARIANCES))


def test_log_prob_matches_scipy(prior):
    points = np.array([[0.0, 0.0], [-2.0, 0.5], [3.0, -2.0]])
    ours = jax.vmap(prior.log_prob)(jnp.asarray(points))
    np.testing.assert_allclose(ours, np.log(scipy_density(points)), rtol=1e-5)
    assert prior.num_components == 3 and prior.dimension == 2


def test_samples_have_the_mixture_moments(prior):
    draws = np.asarray(prior.sample(jax.random.key(0), 20_000), np.float64)
    mean, covariance = np.asarray(prior.mean()), np.asarray(prior.covariance())
    np.testing.assert_allclose(mean, WEIGHTS @ MEANS, rtol=1e-5)
    assert np.all(np.abs(mean_z(draws, mean)) < 4)
    centred = draws - mean
    products = np.stack([centred[:, 0] ** 2, centred[:, 1] ** 2, centred[:, 0] * centred[:, 1]], 1)
    target = [covariance[0, 0], covariance[1, 1], covariance[0, 1]]
    assert np.all(np.abs(mean_z(products, target)) < 4)


def test_linear_gaussian_update_matches_grid_quadrature(prior):
    """Posterior density and evidence on a fine 2-D grid, from the prior and likelihood."""
    H = np.array([[1.0, 0.5]])
    R = np.array([[0.3]])
    y = np.array([0.7])
    posterior, log_evidence = linear_gaussian_update(
        prior, jnp.asarray(H), jnp.asarray(R), jnp.asarray(y)
    )
    axis = np.linspace(-8, 8, 801)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    cell = (axis[1] - axis[0]) ** 2
    likelihood = stats.norm.pdf(y[0], grid @ H[0], np.sqrt(R[0, 0]))
    joint = scipy_density(grid) * likelihood
    evidence = joint.sum() * cell
    np.testing.assert_allclose(float(log_evidence), np.log(evidence), atol=1e-4)
    ours = np.exp(np.asarray(jax.vmap(posterior.log_prob)(jnp.asarray(grid)), np.float64))
    np.testing.assert_allclose(ours, joint / evidence, atol=2e-4 * (joint / evidence).max())
    np.testing.assert_allclose(np.exp(posterior.log_weights).sum(), 1.0, rtol=1e-6)


def test_kl_is_zero_for_equal_mixtures_and_positive_otherwise(prior):
    same, _ = kl_divergence(jax.random.key(1), prior, prior, 2000)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    shifted = prior._replace(means=prior.means + 0.5)
    kl, error = kl_divergence(jax.random.key(2), prior, shifted, 20_000)
    assert float(kl) > 10 * float(error) > 0


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="covariances"):
        mixture(jnp.ones(2), jnp.zeros((2, 3)), jnp.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="weights"):
        mixture(jnp.ones(3), jnp.zeros((2, 2)), jnp.tile(jnp.eye(2), (2, 1, 1)))


def test_bad_values_are_named_and_traced_inputs_are_not_checked():
    eye = jnp.tile(jnp.eye(2), (2, 1, 1))
    with pytest.raises(ValueError, match=r"weights must be finite, >= 0 and not all 0"):
        mixture(jnp.array([-0.5, 1.5]), jnp.zeros((2, 2)), eye)
    with pytest.raises(ValueError, match=r"weights must be finite, >= 0 and not all 0"):
        mixture(jnp.zeros(2), jnp.zeros((2, 2)), eye)
    with pytest.raises(ValueError, match="means must be finite"):
        mixture(jnp.ones(2), jnp.full((2, 2), jnp.nan), eye)
    indefinite = eye.at[1].set(jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match=r"components \[1\] are not symmetric positive definite"):
        mixture(jnp.ones(2), jnp.zeros((2, 2)), indefinite)
    traced = jax.jit(mixture)(jnp.ones(2), jnp.zeros((2, 2)), eye)  # no host check in a trace
    assert jnp.allclose(traced.log_weights, jnp.log(0.5))


def test_one_component_predict_update_recursion_is_the_kalman_filter():
    model = LinearGaussian(
        initial_mean=jnp.array([0.5, -0.2]),
        initial_cov=jnp.array([[1.0, 0.2], [0.2, 0.5]]),
        transition=jnp.array([[0.9, 0.1], [-0.2, 0.8]]),
        transition_cov=0.1 * jnp.eye(2),
        observation=jnp.array([[1.0, 0.0]]),
        observation_cov=jnp.array([[0.25]]),
    )
    _, ys = simulate(jax.random.key(3), model, 20)
    exact = kalman_filter(model, ys)
    state = mixture(jnp.ones(1), model.initial_mean[None], model.initial_cov[None])
    total = 0.0
    for t in range(ys.shape[0]):
        if t > 0:
            state = linear_gaussian_predict(state, model.transition, model.transition_cov)
        state, log_evidence = linear_gaussian_update(
            state, model.observation, model.observation_cov, ys[t]
        )
        total += float(log_evidence)
        np.testing.assert_allclose(state.means[0], exact.filtered_means[t], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state.covariances[0], exact.filtered_covs[t], atol=1e-5)
    np.testing.assert_allclose(total, float(exact.log_likelihood), rtol=1e-5)
