"""Reweighting, the resampling decision and particle selection, shared by the jitted and the
host-stepped SMC samplers."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl import checks
from ppl.diagnostics import effective_sample_size_normalized
from ppl.feynman_kac import Particles


def check_num_particles(num_particles: object, minimum: int = 1) -> int:
    """`num_particles` as an int >= `minimum`, else a ValueError naming the value."""
    return checks.count("num_particles", num_particles, minimum)


class Reweighted(NamedTuple):
    log_weights: jax.Array  # [N] normalized (uniform again if every weight is zero)
    log_increment: jax.Array  # log Σ_i W_i G_i, the step's evidence factor
    num_nan: jax.Array  # potentials that were NaN, counted as zero weight
    all_dead: jax.Array  # bool: every weight is zero
    ess: jax.Array  # effective sample size of the new weights
    num_inf: jax.Array  # potentials that were +inf (not a valid log weight; see `reweight`)


def reweight(log_weights: jax.Array, log_potentials: jax.Array) -> Reweighted:
    """Multiply normalized weights W by potentials G: w_i = W_i G_i, in log space.

    NaN potentials count as zero weight (`num_nan`). A +inf log potential is no valid weight
    of a normalised likelihood ratio: it is counted in `num_inf`, the increment is +inf (never
    `all_dead`) and the weights are uniform over the +inf particles (their limit); the
    samplers' `run` raises a ValueError naming the step when it sees one.
    """
    num_nan = jnp.sum(jnp.isnan(log_potentials))
    log_potentials = jnp.where(jnp.isnan(log_potentials), -jnp.inf, log_potentials)
    infinite = (log_potentials == jnp.inf) & (log_weights > -jnp.inf)
    num_inf = jnp.sum(infinite)
    unnormalized = jnp.where(infinite, 0.0, log_weights + log_potentials)  # no inf - inf
    unnormalized = jnp.where(log_weights == -jnp.inf, -jnp.inf, unnormalized)
    increment = jnp.where(num_inf > 0, jnp.inf, logsumexp(unnormalized))
    all_dead = increment == -jnp.inf
    uniform = jnp.full_like(log_weights, -jnp.log(log_weights.shape[0]))
    on_inf = jnp.where(infinite, -jnp.log(jnp.maximum(num_inf, 1)), -jnp.inf)
    normalized = jnp.where(
        all_dead, uniform, jnp.where(num_inf > 0, on_inf, unnormalized - increment)
    )
    ess = jnp.where(all_dead, 0.0, effective_sample_size_normalized(normalized))
    return Reweighted(normalized, increment, num_nan, all_dead, ess, num_inf)


def check_no_inf(num_inf: jax.Array, sampler: str) -> None:
    """Raise a ValueError naming the first step with a +inf log potential, where `num_inf`
    [T] is concrete (under `jax.jit` it stays in the run's info for the caller to read)."""
    if isinstance(num_inf, jax.core.Tracer):
        return
    steps = np.flatnonzero(np.asarray(num_inf) > 0)
    if steps.size:
        t = int(steps[0])
        raise ValueError(
            f"{sampler}: {int(num_inf[t])} log potential(s) are +inf at step {t} (of "
            f"{int(np.sum(num_inf))} in all); a log potential must be finite or -inf"
        )


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
