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

from ppl.gaussian_mixture import GaussianMixture, linear_gaussian_update


class Problem(NamedTuple):
    """One simulated problem: prior, true latent [D] and data [N, M]."""

    prior: GaussianMixture
    latent: jax.Array
    data: jax.Array


class LinearGaussianTask(NamedTuple):
    """Meta-prior over D-dimensional, K-component priors; N observations y = H x + N(0, R).

    Meta-prior: weights ~ Dirichlet(1), means ~ N(0, mean_scale² I), covariances diag with
    standard deviations log-uniform on [scale_low, scale_high].
    """

    observation_matrix: jax.Array  # H [M, D]
    noise_covariance: jax.Array  # R [M, M]
    num_components: int
    num_data: int
    mean_scale: float = 2.0
    scale_low: float = 0.3
    scale_high: float = 2.0

    @property
    def dimension(self) -> int:
        return int(self.observation_matrix.shape[1])

    def sample_prior(self, rng_key: jax.Array) -> GaussianMixture:
        weight_key, mean_key, scale_key = jax.random.split(rng_key, 3)
        k, d = self.num_components, self.dimension
        log_weights = jnp.log(jax.random.dirichlet(weight_key, jnp.ones(k)))
        means = self.mean_scale * jax.random.normal(mean_key, (k, d))
        log_scales = jax.random.uniform(
            scale_key, (k, d), minval=jnp.log(self.scale_low), maxval=jnp.log(self.scale_high)
        )
        cholesky = jax.vmap(jnp.diag)(jnp.exp(log_scales))
        return GaussianMixture(log_weights, means, cholesky)

    def sample(self, rng_key: jax.Array) -> Problem:
        prior_key, latent_key, noise_key = jax.random.split(rng_key, 3)
        prior = self.sample_prior(prior_key)
        latent = prior.sample(latent_key, 1)[0]
        noise_factor = jnp.linalg.cholesky(self.noise_covariance)
        noise = jax.random.normal(noise_key, (self.num_data, noise_factor.shape[0]))
        data = latent @ self.observation_matrix.T + noise @ noise_factor.T
        return Problem(prior, latent, data)

    def exact_posterior(self, prior: GaussianMixture, data: jax.Array) -> GaussianMixture:
        """Condition on all N observations at once (stacked H, block-diagonal R)."""
        num = data.shape[0]
        stacked = jnp.tile(self.observation_matrix, (num, 1))
        noise = jnp.kron(jnp.eye(num), self.noise_covariance)
        posterior, _ = linear_gaussian_update(prior, stacked, noise, data.reshape(-1))
        return posterior
