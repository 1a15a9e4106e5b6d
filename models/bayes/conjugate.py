"""Conjugate NumPyro models with exact posteriors and exact log evidences, for validating samplers.

Each constructor simulates a data set from the prior predictive (from an explicit key) and returns
a :class:`ConjugateProblem`: the NumPyro model, its data (call ``model(**data)``), the exact
posterior mean and marginal standard deviation of every latent site, and the exact log evidence
log p(data) (natural log, with every constant of the observation density). The exact quantities
are float64 NumPy oracles computed from the data as stored.

- ``normal_normal``: mu ~ N(m0, s0²), y_i ~ N(mu, σ²). Posterior N(m_n, s_n²) with
  1/s_n² = 1/s0² + n/σ², m_n = s_n² (m0/s0² + Σy/σ²); log p(y) = log N(y; m0·1, σ² I + s0² 11ᵀ).
- ``beta_binomial``: p ~ Beta(a, b), k_g ~ Binomial(n, p) for g = 1..G. Posterior
  Beta(a + K, b + nG − K) with K = Σk_g; log p(k) = Σ_g log C(n, k_g) + log B(a + K, b + nG − K)
  − log B(a, b).
- ``linear_regression``: w ~ N(0, s0² I), y ~ N(X w, σ² I). Posterior N(μ, Σ) with
  Σ = (I/s0² + XᵀX/σ²)⁻¹, μ = Σ Xᵀy/σ²; log p(y) = log N(y; 0, σ² I + s0² X Xᵀ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy import special, stats


class ConjugateProblem(NamedTuple):
    name: str
    model: Callable  # NumPyro model; call as model(**data)
    data: dict[str, jax.Array]
    posterior_mean: dict[str, np.ndarray]  # per latent site, exact
    posterior_sd: dict[str, np.ndarray]  # per latent site, exact marginal sd
    log_evidence: float  # exact log p(data), natural log


def normal_normal(
    rng_key: jax.Array,
    num_observations: int = 20,
    prior_mean: float = 0.0,
    prior_sd: float = 2.0,
    noise_sd: float = 1.0,
) -> ConjugateProblem:
    """mu ~ N(prior_mean, prior_sd²), y_i ~ N(mu, noise_sd²); latent site "mu", observed "y".

    Posterior precision 1/prior_sd² + n/noise_sd², mean (prior_mean/prior_sd² + Σy/noise_sd²) /
    precision; log p(y) = log N(y; prior_mean·1, noise_sd² I + prior_sd² 11ᵀ).
    """

    def model(y: jax.Array) -> None:
        mu = numpyro.sample("mu", dist.Normal(prior_mean, prior_sd))
        with numpyro.plate("observations", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, noise_sd), obs=y)

    key_mu, key_y = jax.random.split(rng_key)
    mu = prior_mean + prior_sd * jax.random.normal(key_mu)
    y = mu + noise_sd * jax.random.normal(key_y, (num_observations,))

    y64 = np.asarray(y, np.float64)
    precision = 1.0 / prior_sd**2 + num_observations / noise_sd**2
    mean = (prior_mean / prior_sd**2 + y64.sum() / noise_sd**2) / precision
    cov = noise_sd**2 * np.eye(num_observations) + prior_sd**2 * np.ones((num_observations,) * 2)
    log_evidence = stats.multivariate_normal.logpdf(y64, np.full(num_observations, prior_mean), cov)
    return ConjugateProblem(
        name="normal_normal",
        model=model,
        data={"y": y},
        posterior_mean={"mu": np.asarray(mean)},
        posterior_sd={"mu": np.asarray(1.0 / np.sqrt(precision))},
        log_evidence=float(log_evidence),
    )


def beta_binomial(
    rng_key: jax.Array, num_groups: int = 10, trials: int = 20, a: float = 2.0, b: float = 3.0
) -> ConjugateProblem:
    """p ~ Beta(a, b), successes_g ~ Binomial(trials, p); latent "p", observed "successes" [G].

    Posterior Beta(a + K, b + nG − K) with K = Σ_g k_g, n = trials; log p(k) =
    Σ_g log C(n, k_g) + log B(a + K, b + nG − K) − log B(a, b).
    """

    def model(successes: jax.Array, trials: jax.Array) -> None:
        p = numpyro.sample("p", dist.Beta(a, b))
        with numpyro.plate("groups", successes.shape[0]):
            numpyro.sample("successes", dist.Binomial(trials, p), obs=successes)

    key_p, key_k = jax.random.split(rng_key)
    p = jax.random.beta(key_p, a, b)
    successes = jax.random.binomial(key_k, trials, p, (num_groups,)).astype(jnp.int32)

    k = np.asarray(successes, np.float64)
    post_a, post_b = a + k.sum(), b + (trials - k).sum()
    log_choose = (
        special.gammaln(trials + 1) - special.gammaln(k + 1) - special.gammaln(trials - k + 1)
    )
    log_evidence = log_choose.sum() + special.betaln(post_a, post_b) - special.betaln(a, b)
    return ConjugateProblem(
        name="beta_binomial",
        model=model,
        data={"successes": successes, "trials": jnp.asarray(trials, jnp.int32)},
        posterior_mean={"p": np.asarray(stats.beta.mean(post_a, post_b))},
        posterior_sd={"p": np.asarray(stats.beta.std(post_a, post_b))},
        log_evidence=float(log_evidence),
    )


def linear_regression(
    rng_key: jax.Array,
    num_observations: int = 50,
    num_features: int = 3,
    prior_sd: float = 1.0,
    noise_sd: float = 0.5,
) -> ConjugateProblem:
    """weights ~ N(0, prior_sd² I), y ~ N(X weights, noise_sd² I), X ~ N(0, 1) simulated.

    Latent "weights" [D], data kwargs X [N, D] and y [N]. Posterior covariance
    Σ = (I/prior_sd² + XᵀX/noise_sd²)⁻¹, mean Σ Xᵀy/noise_sd²;
    log p(y) = log N(y; 0, noise_sd² I + prior_sd² X Xᵀ).
    """

    def model(X: jax.Array, y: jax.Array) -> None:
        prior = dist.Normal(0.0, prior_sd).expand([X.shape[1]]).to_event(1)
        weights = numpyro.sample("weights", prior)
        with numpyro.plate("observations", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ weights, noise_sd), obs=y)

    key_x, key_w, key_y = jax.random.split(rng_key, 3)
    X = jax.random.normal(key_x, (num_observations, num_features))
    weights = prior_sd * jax.random.normal(key_w, (num_features,))
    y = X @ weights + noise_sd * jax.random.normal(key_y, (num_observations,))

    X64, y64 = np.asarray(X, np.float64), np.asarray(y, np.float64)
    precision = np.eye(num_features) / prior_sd**2 + X64.T @ X64 / noise_sd**2
    cov = np.linalg.inv(precision)
    mean = np.linalg.solve(precision, X64.T @ y64 / noise_sd**2)
    evidence_cov = noise_sd**2 * np.eye(num_observations) + prior_sd**2 * X64 @ X64.T
    log_evidence = stats.multivariate_normal.logpdf(y64, np.zeros(num_observations), evidence_cov)
    return ConjugateProblem(
        name="linear_regression",
        model=model,
        data={"X": X, "y": y},
        posterior_mean={"weights": mean},
        posterior_sd={"weights": np.sqrt(np.diag(cov))},
        log_evidence=float(log_evidence),
    )


def conjugate_problems(rng_key: jax.Array) -> tuple[ConjugateProblem, ...]:
    """The three problems at their default sizes, each from its own split of ``rng_key``."""
    key_nn, key_bb, key_lr = jax.random.split(rng_key, 3)
    return normal_normal(key_nn), beta_binomial(key_bb), linear_regression(key_lr)
