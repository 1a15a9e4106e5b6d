"""The standard stochastic volatility model (a latent log-variance AR(1)):

    x_0 ~ N(μ, σ² / (1 - φ²)),  x_t = μ + φ (x_{t-1} - μ) + σ e_t,  e_t ~ N(0, 1),
    y_t | x_t ~ N(0, exp(x_t)),

observed at t = 0..T-1, with |φ| < 1 and σ > 0 so that x is stationary with mean μ and
variance σ² / (1 - φ²) from t = 0 on. The likelihood has no closed form; the bootstrap
filter proposes from the AR(1) and weights by
log p(y_t | x_t) = -(log 2π + x_t + y_t² exp(-x_t)) / 2.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl import checks
from ppl.feynman_kac import FeynmanKac


class StochasticVolatility(NamedTuple):
    mu: jax.Array | float  # μ, the stationary mean of the log-variance
    phi: jax.Array | float  # φ, the persistence, |φ| < 1
    sigma: jax.Array | float  # σ > 0, the innovation standard deviation


def validate(model: StochasticVolatility) -> StochasticVolatility:
    """Raise ValueError for a non-finite μ, |φ| >= 1 or σ <= 0 (NaN and ±inf included) when
    the values are concrete (Python or NumPy numbers, non-traced arrays); traced values pass
    through unchecked."""
    values = {}
    for name in ("mu", "phi", "sigma"):
        value = getattr(model, name)
        if isinstance(value, jax.core.Tracer):
            continue
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError
            values[name] = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if "mu" in values and not np.all(np.isfinite(values["mu"])):
        raise ValueError(f"mu must be finite, got {values['mu']}")
    if "phi" in values and not np.all(np.abs(values["phi"]) < 1):
        raise ValueError(f"phi must satisfy |phi| < 1 (stationary AR(1)), got {values['phi']}")
    if "sigma" in values and not np.all((values["sigma"] > 0) & np.isfinite(values["sigma"])):
        raise ValueError(f"sigma must be > 0 and finite, got {values['sigma']}")
    return model


def stationary_std(model: StochasticVolatility) -> jax.Array:
    """The stationary standard deviation σ / sqrt(1 - φ²) of x_t."""
    return jnp.asarray(model.sigma) / jnp.sqrt(1 - jnp.square(model.phi))


def observation_log_likelihood(y: jax.Array, x: jax.Array) -> jax.Array:
    """log N(y; 0, exp(x)), elementwise."""
    return -0.5 * (math.log(2 * math.pi) + x + jnp.square(y) * jnp.exp(-x))


def simulate(
    rng_key: jax.Array, model: StochasticVolatility, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """States [T] and observations [T], T = `num_steps` >= 1."""
    validate(model)
    num_steps = checks.count("num_steps", num_steps)
    mu, phi, sigma = (jnp.asarray(v) for v in model)
    key0, key_states, key_obs = jax.random.split(rng_key, 3)
    x0 = mu + stationary_std(model) * jax.random.normal(key0)

    def body(x: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
        x_next = mu + phi * (x - mu) + sigma * noise
        return x_next, x

    noises = jax.random.normal(key_states, (num_steps,))
    _, states = jax.lax.scan(body, x0, noises)
    observations = jnp.exp(0.5 * states) * jax.random.normal(key_obs, (num_steps,))
    return states, observations


def bootstrap(model: StochasticVolatility, observations: jax.Array) -> FeynmanKac:
    """The bootstrap Feynman-Kac model on float particles [N]: propose from the AR(1), weight
    by p(y_t | x_t)."""
    validate(model)
    mu, phi, sigma = (jnp.asarray(v) for v in model)
    std0 = stationary_std(model)
    observations = jnp.asarray(observations)
    if observations.ndim != 1 or observations.shape[0] < 1:
        raise ValueError(f"observations must be [T >= 1], got shape {observations.shape}")
    checks.finite_array("observations", observations)

    def initial_sample(key: jax.Array, n: int) -> jax.Array:
        return mu + std0 * jax.random.normal(key, (n,))

    def transition_sample(key: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
        return mu + phi * (x - mu) + sigma * jax.random.normal(key, x.shape)

    return FeynmanKac(
        initial_sample=initial_sample,
        initial_log_potential=lambda x: observation_log_likelihood(observations[0], x),
        transition_sample=transition_sample,
        log_potential=lambda t, x_prev, x: observation_log_likelihood(observations[t], x),
        num_steps=observations.shape[0],
    )
