"""Resampling schemes behind one log-weight interface: BlackJAX's multinomial, stratified and
residual, and an O(N) systematic scheme that draws what BlackJAX's does.

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


def systematic(rng_key: jax.Array, weights: jax.Array, num_samples: int) -> jax.Array:
    """Systematic resampling in O(N): ancestor a_i = #{j : C_j < (i + U) / M} for cumulative
    weights C and one U ~ U[0, 1).

    The same draw as BlackJAX's `systematic` (up to float rounding of C), which binary-searches
    every point (O(N log N), 3 ms at N = 1e5 on two CPU cores, against 0.8 ms here). Since
    C_j < (i + U) / M exactly when i >= floor(M C_j - U) + 1, marking each j at that first i
    and taking a running sum of the marks counts the j below every point.
    """
    num_weights = weights.shape[0]
    uniform = jax.random.uniform(rng_key, dtype=weights.dtype)
    cumulative = jax.lax.associative_scan(jnp.add, weights)
    first = jnp.floor(num_samples * cumulative - uniform).astype(jnp.int32) + 1
    marks = jnp.zeros(num_samples + 1, jnp.int32).at[jnp.clip(first, 0, num_samples)].add(1)
    ancestors = jax.lax.associative_scan(jnp.add, marks[:num_samples])
    return jnp.minimum(ancestors, num_weights - 1)  # C_N may round below 1


SCHEMES: dict[str, Resampler] = {
    "multinomial": blackjax_resampling.multinomial,
    "stratified": blackjax_resampling.stratified,
    "systematic": systematic,
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


def resample_where(
    rng_key: jax.Array, log_weights: jax.Array, do_resample: jax.Array, scheme: str = "systematic"
) -> jax.Array:
    """Ancestors [N]: drawn from exp(log_weights) [N] if `do_resample`, else the identity (a
    traced `lax.cond`; under `vmap`, per group)."""
    num_particles = log_weights.shape[0]
    return jax.lax.cond(
        do_resample,
        lambda: resample(rng_key, log_weights, num_particles, scheme),
        lambda: jnp.arange(num_particles, dtype=jnp.int32),
    )
