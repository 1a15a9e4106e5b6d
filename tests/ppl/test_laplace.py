"""The Laplace reference against an exact Gaussian, and its errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.laplace import LaplaceError, laplace_reference

MEAN = jnp.array([1.0, -2.0, 0.5])
COVARIANCE = jnp.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])


def gaussian_log_density(u):
    centred = u - MEAN
    return -0.5 * centred @ jnp.linalg.solve(COVARIANCE, centred) + 7.0


def test_the_laplace_reference_of_a_gaussian_is_that_gaussian_inflated():
    reference = laplace_reference(gaussian_log_density, jnp.zeros(3), inflation=2.0)
    np.testing.assert_allclose(reference.mean, MEAN, atol=1e-4)
    covariance = reference.cholesky @ reference.cholesky.T
    np.testing.assert_allclose(covariance, 4.0 * COVARIANCE, rtol=1e-4, atol=1e-5)
    draws = reference.sample(jax.random.key(0), 20000)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), 4.0 * COVARIANCE, atol=0.15)
    # its log density is the normalised N(mean, 4Σ) density
    point = jnp.array([0.3, 0.1, -0.2])
    exact = jax.scipy.stats.multivariate_normal.logpdf(point, MEAN, 4.0 * COVARIANCE)
    np.testing.assert_allclose(reference.log_density(point), exact, rtol=1e-5)


def test_a_density_with_no_mode_is_a_clear_error():
    with pytest.raises(LaplaceError, match="not negative definite"):
        laplace_reference(lambda u: -jnp.sum(u[:1] ** 2) + 0.0 * u[1], jnp.ones(2))
    with pytest.raises(ValueError, match="inflation must be a finite number > 0"):
        laplace_reference(gaussian_log_density, jnp.zeros(3), inflation=float("nan"))
