"""Gaussian mixtures as pytrees, and their exact update under a linear-Gaussian observation.

A mixture with K components in D dimensions,

    p(x) = Σ_k w_k N(x; m_k, L_k L_kᵀ),

is held as `log_weights` [K] (normalised), `means` [K, D] and lower-triangular Cholesky
factors `cholesky` [K, D, D] with positive diagonals. It is the prior and posterior format of
the Distribution Transformer (Whittle et al. 2025) and a proposal for importance sampling and
SMC, so it lives in the core where both `samplers` and `models` can use it.

Exact conjugate update. With y = H x + v, v ~ N(0, R), each component is updated by the Kalman
equations and re-weighted by its own evidence:

    S_k = H Σ_k Hᵀ + R,   K_k = Σ_k Hᵀ S_k⁻¹,
    m_k' = m_k + K_k (y − H m_k),   Σ_k' = (I − K_k H) Σ_k,
    w_k' ∝ w_k N(y; H m_k, S_k),   p(y) = Σ_k w_k N(y; H m_k, S_k).

Exact prediction through x' = A x + N(0, Q): m_k' = A m_k, Σ_k' = A Σ_k Aᵀ + Q, weights kept.
Alternating the two is the exact filter of a linear-Gaussian state-space model whose initial
state is a mixture (a bank of Kalman filters), the oracle for amortized filters.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl.small_linalg import cholesky as cholesky_factor
from ppl.small_linalg import cholesky_solve, solve_lower


class GaussianMixture(NamedTuple):
    """Σ_k exp(log_weights[k]) N(means[k], cholesky[k] cholesky[k]ᵀ); weights normalised."""

    log_weights: jax.Array
    means: jax.Array
    cholesky: jax.Array

    @property
    def num_components(self) -> int:
        return int(self.means.shape[-2])

    @property
    def dimension(self) -> int:
        return int(self.means.shape[-1])

    @property
    def covariances(self) -> jax.Array:
        return self.cholesky @ jnp.swapaxes(self.cholesky, -1, -2)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log p(x) for one point [D] (vmap for many)."""
        return logsumexp(
            self.log_weights
            + jax.vmap(_normal_log_prob, (None, 0, 0))(x, self.means, self.cholesky)
        )

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """`num_samples` draws [num_samples, D]: a component by weight, then its normal."""
        component_key, noise_key = jax.random.split(rng_key)
        components = jax.random.categorical(component_key, self.log_weights, shape=(num_samples,))
        noise = jax.random.normal(noise_key, (num_samples, self.dimension), self.means.dtype)
        return self.means[components] + jnp.einsum("nij,nj->ni", self.cholesky[components], noise)

    def mean(self) -> jax.Array:
        """The mixture mean Σ_k w_k m_k."""
        return jnp.exp(self.log_weights) @ self.means

    def covariance(self) -> jax.Array:
        """The mixture covariance Σ_k w_k (Σ_k + m_k m_kᵀ) − m mᵀ."""
        weights = jnp.exp(self.log_weights)
        mean = weights @ self.means
        second = jnp.einsum("k,kij->ij", weights, self.covariances) + jnp.einsum(
            "k,ki,kj->ij", weights, self.means, self.means
        )
        return second - jnp.outer(mean, mean)


def _normal_log_prob(x: jax.Array, mean: jax.Array, cholesky: jax.Array) -> jax.Array:
    whitened = solve_lower(cholesky, x - mean)
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(cholesky))))
    return -0.5 * (whitened @ whitened + x.shape[-1] * jnp.log(2 * jnp.pi)) - log_det


def mixture(weights: jax.Array, means: jax.Array, covariances: jax.Array) -> GaussianMixture:
    """Build a mixture from weights (any positive scale), means [K, D] and covariances [K, D, D].

    Raises a ValueError for mismatched shapes and, on concrete (untraced) inputs, for
    negative, non-finite or all-zero weights, non-finite means and covariances that are not
    symmetric positive definite.
    """
    weights, means, covariances = map(jnp.asarray, (weights, means, covariances))
    if means.ndim != 2 or covariances.shape != (*means.shape, means.shape[-1]):
        raise ValueError(
            f"need means [K, D] and covariances [K, D, D]; got {means.shape}, {covariances.shape}"
        )
    if weights.shape != means.shape[:1]:
        raise ValueError(f"need weights [K] = [{means.shape[0]}], got {weights.shape}")
    log_weights = jnp.log(weights) - jnp.log(jnp.sum(weights))
    cholesky = jax.vmap(cholesky_factor)(covariances)
    if not any(isinstance(a, jax.core.Tracer) for a in (weights, means, covariances)):
        _check_values(np.asarray(weights), np.asarray(means), np.asarray(cholesky))
    return GaussianMixture(log_weights, means, cholesky)


def _check_values(weights: np.ndarray, means: np.ndarray, cholesky: np.ndarray) -> None:
    if not np.isfinite(weights).all() or (weights < 0).any() or not weights.sum() > 0:
        raise ValueError(f"mixture weights must be finite, >= 0 and not all 0; got {weights}")
    if not np.isfinite(means).all():
        raise ValueError("mixture means must be finite; got NaN or inf")
    bad = np.flatnonzero(~np.isfinite(cholesky).reshape(len(cholesky), -1).all(axis=1))
    if bad.size:
        raise ValueError(
            f"the covariances of components {bad.tolist()} are not symmetric positive "
            "definite (or not finite): their Cholesky factor does not exist"
        )


def linear_gaussian_update(
    prior: GaussianMixture,
    observation_matrix: jax.Array,
    noise_covariance: jax.Array,
    observation: jax.Array,
) -> tuple[GaussianMixture, jax.Array]:
    """The exact posterior mixture and log p(y) for y = H x + N(0, R) (module docstring)."""
    H, R, y = observation_matrix, noise_covariance, observation

    def one(mean: jax.Array, cholesky: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        covariance = cholesky @ cholesky.T
        innovation_covariance = H @ covariance @ H.T + R
        factor = cholesky_factor(innovation_covariance)
        gain = cholesky_solve(factor, H @ covariance).T
        residual = y - H @ mean
        new_mean = mean + gain @ residual
        new_covariance = covariance - gain @ innovation_covariance @ gain.T
        new_covariance = 0.5 * (new_covariance + new_covariance.T)
        return new_mean, cholesky_factor(new_covariance), _normal_log_prob(y, H @ mean, factor)

    means, cholesky, log_likelihoods = jax.vmap(one)(prior.means, prior.cholesky)
    joint = prior.log_weights + log_likelihoods
    log_evidence = logsumexp(joint)
    return GaussianMixture(joint - log_evidence, means, cholesky), log_evidence


def linear_gaussian_predict(
    mixture: GaussianMixture, transition: jax.Array, transition_covariance: jax.Array
) -> GaussianMixture:
    """The exact mixture of A x + N(0, Q) for x from `mixture` (module docstring)."""
    A, Q = transition, transition_covariance

    def one(cholesky: jax.Array) -> jax.Array:
        factor = A @ cholesky
        return cholesky_factor(factor @ factor.T + Q)

    return GaussianMixture(
        mixture.log_weights, mixture.means @ A.T, jax.vmap(one)(mixture.cholesky)
    )


def kl_divergence(
    rng_key: jax.Array, p: GaussianMixture, q: GaussianMixture, num_samples: int = 10_000
) -> tuple[jax.Array, jax.Array]:
    """Monte Carlo KL(p ‖ q) = E_p[log p − log q] and its standard error (no closed form for
    mixtures)."""
    draws = p.sample(rng_key, num_samples)
    differences = jax.vmap(p.log_prob)(draws) - jax.vmap(q.log_prob)(draws)
    return jnp.mean(differences), jnp.std(differences) / jnp.sqrt(num_samples)
