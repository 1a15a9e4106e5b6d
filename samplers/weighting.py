"""Reweighting, the resampling decision and particle selection, shared by the jitted and the
host-stepped SMC samplers."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl.diagnostics import effective_sample_size_normalized
from ppl.feynman_kac import Particles


def check_num_particles(num_particles: object) -> int:
    """`num_particles` as an int >= 1, else a ValueError naming the value."""
    if isinstance(num_particles, bool) or not isinstance(num_particles, (int, np.integer)):
        raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    return int(num_particles)


class Reweighted(NamedTuple):
    log_weights: jax.Array  # [N] normalized (uniform again if every weight is zero)
    log_increment: jax.Array  # log Σ_i W_i G_i, the step's evidence factor
    num_nan: jax.Array  # potentials that were NaN, counted as zero weight
    all_dead: jax.Array  # bool: every weight is zero
    ess: jax.Array  # effective sample size of the new weights


def reweight(log_weights: jax.Array, log_potentials: jax.Array) -> Reweighted:
    """Multiply normalized weights W by potentials G: w_i = W_i G_i, in log space."""
    num_nan = jnp.sum(jnp.isnan(log_potentials))
    log_potentials = jnp.where(jnp.isnan(log_potentials), -jnp.inf, log_potentials)
    unnormalized = log_weights + log_potentials
    increment = logsumexp(unnormalized)
    all_dead = ~jnp.isfinite(increment)
    uniform = jnp.full_like(log_weights, -jnp.log(log_weights.shape[0]))
    normalized = jnp.where(all_dead, uniform, unnormalized - increment)
    ess = jnp.where(all_dead, 0.0, effective_sample_size_normalized(normalized))
    return Reweighted(normalized, increment, num_nan, all_dead, ess)


def needs_resampling(log_weights: jax.Array | np.ndarray, ess_threshold: float) -> jax.Array:
    """ESS(W) < ess_threshold * N over the last (particle) axis of normalized log weights,
    ESS = 1 / Σ W_i². Traced for JAX arrays (the jitted samplers decide in `lax.cond`);
    float64 NumPy for host arrays, whose groups the host samplers decide on concretely."""
    num_particles = log_weights.shape[-1]
    if isinstance(log_weights, np.ndarray):
        ess = 1.0 / np.sum(np.exp(2.0 * log_weights.astype(np.float64)), axis=-1)
    elif log_weights.ndim == 1:
        ess = effective_sample_size_normalized(log_weights)
    else:
        ess = jax.vmap(effective_sample_size_normalized)(log_weights)
    return ess < ess_threshold * num_particles


def select(mask: jax.Array, if_true: Particles, if_false: Particles) -> Particles:
    """Per particle, `if_true` where `mask` [N] holds, else `if_false`."""

    def pick(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, if_true, if_false)
