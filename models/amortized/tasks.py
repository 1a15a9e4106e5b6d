"""Simulation tasks for training amortized posteriors, with exact posteriors where they exist.

A task draws a prior mixture from a meta-prior, a latent from that prior and data from the
likelihood. `LinearGaussianTask` observes y_n = H x + N(0, R), n = 1..N, so the exact posterior
is the mixture of Kalman updates (`ppl.gaussian_mixture.linear_gaussian_update`), the oracle of
the Distribution Transformer paper's conjugate Gaussian-mixture experiment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.distributions import LKJCholesky

from ppl import checks
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
    num_data = checks.count("num_data", num_data)
    if min_data is None:
        return jnp.ones(num_data, bool)
    if checks.count("min_data", min_data, 0) > num_data:
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

    def check(self) -> LinearGaussianTask:
        """Raise a ValueError naming a setting that cannot define the task (counts below 1,
        scales that are not finite and positive, H not [M, D], R not positive definite)."""
        checks.count("num_components", self.num_components)
        checks.count("num_data", self.num_data)
        checks.number("mean_scale", self.mean_scale, 0)
        low = checks.number("scale_low", self.scale_low, 0)
        high = checks.number("scale_high", self.scale_high, 0)
        if not 0 < low <= high:
            raise ValueError(f"need 0 < scale_low <= scale_high, got {low}, {high}")
        if jnp.ndim(self.observation_matrix) != 2:
            raise ValueError(
                f"observation_matrix must be [M, D], got shape {jnp.shape(self.observation_matrix)}"
            )
        checks.finite_array("observation_matrix", self.observation_matrix)
        size = jnp.shape(self.observation_matrix)[0]
        if jnp.shape(self.noise_covariance) != (size, size):
            raise ValueError(
                f"noise_covariance must be [{size}, {size}] like the rows of observation_matrix, "
                f"got shape {jnp.shape(self.noise_covariance)}"
            )
        checks.positive_definite("noise_covariance", self.noise_covariance)
        return self

    def sample_prior(self, rng_key: jax.Array) -> GaussianMixture:
        self.check()
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
        """A fresh problem (checks the settings first; see `check`)."""
        prior_key, latent_key, noise_key, mask_key = jax.random.split(rng_key, 4)
        prior = self.sample_prior(prior_key)
        latent = prior.sample(latent_key, 1)[0]
        noise_factor = jnp.linalg.cholesky(self.noise_covariance)
        noise = jax.random.normal(noise_key, (self.num_data, noise_factor.shape[0]))
        data = latent @ self.observation_matrix.T + noise @ noise_factor.T
        mask = data_mask(mask_key, self.min_data, self.num_data)
        return Problem(prior, latent, jnp.where(mask[:, None], data, 0.0), mask)

    def log_likelihood(self, x: jax.Array, data: jax.Array, mask: jax.Array) -> jax.Array:
        """Σ_n mask_n log N(y_n; H x, R) for one latent x [D] and data [N, M].

        R⁻¹ and log det R come from the task's constant R, so batching over problems batches
        no matrix factorisation (`ppl.small_linalg` says why batched LAPACK calls are avoided).
        """
        precision = jnp.linalg.inv(self.noise_covariance)
        residuals = data - x @ self.observation_matrix.T
        per_point = -0.5 * jnp.einsum("ni,ij,nj->n", residuals, precision, residuals)
        return jnp.sum(jnp.where(mask, per_point - self._noise_log_normaliser(), 0.0))

    def _noise_log_normaliser(self) -> jax.Array:
        """½ (log det R + M log 2π) = −log N(0; 0, R)."""
        size = self.noise_covariance.shape[0]
        return 0.5 * (jnp.linalg.slogdet(self.noise_covariance)[1] + size * jnp.log(2 * jnp.pi))

    def logdensity_fn(self, problem: Problem) -> Callable[[jax.Array], jax.Array]:
        """x ↦ log p(x) + log p(y | x), the unnormalised posterior of `problem`."""
        return lambda x: (
            problem.prior.log_prob(x) + self.log_likelihood(x, problem.data, problem.mask)
        )

    def _stacked_update(
        self, prior: GaussianMixture, data: jax.Array, mask: jax.Array | None
    ) -> tuple[GaussianMixture, jax.Array]:
        """Condition on the N observations at once (stacked H, block-diagonal R).

        A masked point gets a zero block of H and a zero observation, which leaves every
        component and weight as it is and adds log N(0; 0, R) to the evidence.
        """
        num = data.shape[0]
        if mask is None:
            mask = jnp.ones(num, bool)
        rows = jnp.repeat(mask, self.observation_matrix.shape[0])
        stacked = jnp.tile(self.observation_matrix, (num, 1)) * rows[:, None]
        noise = jnp.kron(jnp.eye(num), self.noise_covariance)
        posterior, log_evidence = linear_gaussian_update(
            prior, stacked, noise, jnp.where(rows, data.reshape(-1), 0.0)
        )
        return posterior, log_evidence + jnp.sum(~mask) * self._noise_log_normaliser()

    def exact_posterior(
        self, prior: GaussianMixture, data: jax.Array, mask: jax.Array | None = None
    ) -> GaussianMixture:
        """The exact posterior mixture given the points in `mask` (default all)."""
        return self._stacked_update(prior, data, mask)[0]

    def exact_log_evidence(
        self, prior: GaussianMixture, data: jax.Array, mask: jax.Array | None = None
    ) -> jax.Array:
        """log p(y[mask]) = log ∫ p(x) Π_{n in mask} N(y_n; H x, R) dx, exactly."""
        return self._stacked_update(prior, data, mask)[1]
