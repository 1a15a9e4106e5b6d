"""Simulation tasks for training amortized posteriors, with exact posteriors where they exist.

A task draws a prior mixture from a meta-prior, a latent from that prior and data from the
likelihood. `LinearGaussianTask` observes y_n = H x + N(0, R), n = 1..N, so the exact posterior
is the mixture of Kalman updates (`ppl.gaussian_mixture.linear_gaussian_update`), the oracle of
the Distribution Transformer paper's conjugate Gaussian-mixture experiment.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.distributions import LKJCholesky

from ppl.gaussian_mixture import GaussianMixture, linear_gaussian_update


class Problem(NamedTuple):
    """One simulated problem: prior, true latent [D], data [N, M] and mask [N].

    Points whose mask is False are padding (problems with fewer points share a batch shape);
    the likelihood and the network ignore them.
    """

    prior: GaussianMixture
    latent: jax.Array
    data: jax.Array
    mask: jax.Array


def data_mask(rng_key: jax.Array, min_data: int | None, num_data: int) -> jax.Array:
    """All True, or the first n of `num_data` with n uniform on [min_data, num_data]."""
    if min_data is None:
        return jnp.ones(num_data, bool)
    if not 0 <= min_data <= num_data:
        raise ValueError(f"need 0 <= min_data <= num_data, got {min_data}, {num_data}")
    count = jax.random.randint(rng_key, (), min_data, num_data + 1)
    return jnp.arange(num_data) < count


class LinearGaussianTask(NamedTuple):
    """Meta-prior over D-dimensional, K-component priors; N observations y = H x + N(0, R).

    Meta-prior: weights ~ Dirichlet(1), means ~ N(0, mean_scale² I), standard deviations
    log-uniform on [scale_low, scale_high]; covariances diagonal, or with an LKJ(2) correlation
    matrix when `correlated` (the shapes a filter's predict step produces). With `min_data` set,
    each problem observes a uniform number of points in [min_data, num_data] (the rest masked).
    """

    observation_matrix: jax.Array  # H [M, D]
    noise_covariance: jax.Array  # R [M, M]
    num_components: int
    num_data: int
    mean_scale: float = 2.0
    scale_low: float = 0.3
    scale_high: float = 2.0
    correlated: bool = False
    min_data: int | None = None

    @property
    def dimension(self) -> int:
        return int(self.observation_matrix.shape[1])

    def sample_prior(self, rng_key: jax.Array) -> GaussianMixture:
        weight_key, mean_key, scale_key, correlation_key = jax.random.split(rng_key, 4)
        k, d = self.num_components, self.dimension
        log_weights = jnp.log(jax.random.dirichlet(weight_key, jnp.ones(k)))
        means = self.mean_scale * jax.random.normal(mean_key, (k, d))
        log_scales = jax.random.uniform(
            scale_key, (k, d), minval=jnp.log(self.scale_low), maxval=jnp.log(self.scale_high)
        )
        cholesky = jax.vmap(jnp.diag)(jnp.exp(log_scales))
        if self.correlated and d > 1:
            correlation = LKJCholesky(d, 2.0).sample(correlation_key, (k,))
            cholesky = cholesky @ correlation
        return GaussianMixture(log_weights, means, cholesky)

    def sample(self, rng_key: jax.Array) -> Problem:
        prior_key, latent_key, noise_key, mask_key = jax.random.split(rng_key, 4)
        prior = self.sample_prior(prior_key)
        latent = prior.sample(latent_key, 1)[0]
        noise_factor = jnp.linalg.cholesky(self.noise_covariance)
        noise = jax.random.normal(noise_key, (self.num_data, noise_factor.shape[0]))
        data = latent @ self.observation_matrix.T + noise @ noise_factor.T
        mask = data_mask(mask_key, self.min_data, self.num_data)
        return Problem(prior, latent, jnp.where(mask[:, None], data, 0.0), mask)

    def exact_posterior(
        self, prior: GaussianMixture, data: jax.Array, mask: jax.Array | None = None
    ) -> GaussianMixture:
        """Condition on the N observations at once (stacked H, block-diagonal R).

        A masked point gets a zero block of H, which leaves every component and weight as it is.
        """
        num = data.shape[0]
        if mask is None:
            mask = jnp.ones(num, bool)
        rows = jnp.repeat(mask, self.observation_matrix.shape[0])
        stacked = jnp.tile(self.observation_matrix, (num, 1)) * rows[:, None]
        noise = jnp.kron(jnp.eye(num), self.noise_covariance)
        posterior, _ = linear_gaussian_update(
            prior, stacked, noise, jnp.where(rows, data.reshape(-1), 0.0)
        )
        return posterior
