"""An ARMA(1, 1) time-series model in NumPyro, with data simulated from a fixed seed.

As Stan's posteriordb ``arma11``: mu ~ N(0, 10²), phi, theta ~ N(0, 2²), sigma ~ HalfCauchy(2.5),

    nu_1 = mu + phi·mu,                    err_1 = y_1 − nu_1,
    nu_t = mu + phi·y_{t-1} + theta·err_{t-1},  err_t = y_t − nu_t   (t = 2..T),
    err_t ~ N(0, sigma²).

For |theta| > 1 the error recursion grows like theta^T, so the log density is astronomically
low there (below −1e70 at some `init_to_uniform` starts in float64): a hard test of the
initialisation and warm-up of NUTS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike


def arma11(y: ArrayLike) -> None:
    """ARMA(1, 1); sites mu, phi, theta, sigma, and the observed errors ``err`` [T]."""
    y = jnp.asarray(y)
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    first = y[0] - (mu + phi * mu)

    def step(previous_error: jax.Array, pair: jax.Array) -> tuple[jax.Array, jax.Array]:
        error = pair[1] - (mu + phi * pair[0] + theta * previous_error)
        return error, error

    _, rest = jax.lax.scan(step, first, jnp.stack([y[:-1], y[1:]], axis=-1))
    errors = jnp.concatenate([first[None], rest])
    with numpyro.plate("times", y.shape[0]):
        numpyro.sample("err", dist.Normal(0.0, sigma), obs=errors)


def simulate_arma11(
    seed: int = 0,
    num_times: int = 100,
    mu: float = 1.0,
    phi: float = 0.9,
    theta: float = 0.5,
    sigma: float = 1.0,
) -> np.ndarray:
    """`num_times` observations of the ARMA(1, 1) process, from NumPy's generator `seed`."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, num_times)
    y = np.empty(num_times)
    y[0] = mu + phi * mu + noise[0]
    for t in range(1, num_times):
        y[t] = mu + phi * y[t - 1] + theta * noise[t - 1] + noise[t]
    return y
