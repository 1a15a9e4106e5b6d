"""Resampling schemes (BlackJAX's implementations) behind one log-weight interface.

Each scheme draws N ancestor indices a_1..a_N with E[#{j : a_j = i}] = N W_i. Multinomial
draws them independently; stratified and systematic use one uniform per stratum (independent,
or shared) and have lower variance; residual keeps floor(N W_i) copies and draws the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from blackjax.smc import resampling as blackjax_resampling

Resampler = Callable[[jax.Array, jax.Array, int], jax.Array]
SCHEMES: dict[str, Resampler] = {
    "multinomial": blackjax_resampling.multinomial,
    "stratified": blackjax_resampling.stratified,
    "systematic": blackjax_resampling.systematic,
    "residual": blackjax_resampling.residual,
}


def get_scheme(name: str) -> Resampler:
    if name not in SCHEMES:
        raise ValueError(f"unknown resampling scheme {name!r}; choose from {sorted(SCHEMES)}")
    return SCHEMES[name]


def resample(
    rng_key: jax.Array, log_weights: jax.Array, num_samples: int, scheme: str = "systematic"
) -> jax.Array:
    """Ancestor indices [num_samples] drawn in proportion to exp(log_weights)."""
    weights = jax.nn.softmax(log_weights)
    return get_scheme(scheme)(rng_key, weights, num_samples).astype(jnp.int32)
