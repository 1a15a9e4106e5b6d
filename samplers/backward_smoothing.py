"""Backward-simulation smoothing (Godsill, Doucet and West 2004) from a stored particle system.

Given the filtering particles x_t^i with normalized weights W_t^i at every t, and the
transition density m_{t+1}(x_t, x_{t+1}), one smoothing path is drawn backwards:

    x_{T-1}^* ~ Σ_i W_{T-1}^i δ_{x_{T-1}^i},
    x_t^* = x_t^j  with  P(j) ∝ W_t^j m_{t+1}(x_t^j, x_{t+1}^*),   t = T-2, ..., 0.

Paths drawn this way are (approximately, as N grows) distributed as p(x_{0:T-1} | y_{0:T-1}),
and unlike the ancestral genealogy they do not degenerate to a few distinct early states.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ppl import checks
from ppl.feynman_kac import Particles

TransitionLogDensity = Callable[[jax.Array, Particles, Particles], jax.Array]


def backward_sample(
    rng_key: jax.Array,
    particles: Particles,
    log_weights: jax.Array,
    transition_log_density: TransitionLogDensity,
    num_samples: int,
) -> Particles:
    """Draw `num_samples` smoothing paths ([T, num_samples, ...] leaves).

    Args:
        particles: the filtering particles of every step, leaves [T, N, ...] (an SMC run with
            `keep_history=True` returns them).
        log_weights: [T, N] normalized filtering log weights.
        transition_log_density: `(t, x_{t-1}, x_t) -> log m_t(x_{t-1}, x_t)` over N particles.
    """
    num_samples = checks.count("num_samples", num_samples)
    if particles is None:
        raise ValueError("no particle history: run SMC with keep_history=True")
    if jnp.ndim(log_weights) != 2:
        raise ValueError(f"log_weights must be [T, N], got shape {jnp.shape(log_weights)}")
    num_steps, num_particles = log_weights.shape
    for leaf in jax.tree.leaves(particles):
        if jnp.shape(leaf)[:2] != (num_steps, num_particles):
            raise ValueError(
                f"particles' leaves must be [T, N, ...] = [{num_steps}, {num_particles}, ...] "
                f"like log_weights, got shape {jnp.shape(leaf)}"
            )

    def at(t: jax.Array | int, index: jax.Array) -> Particles:
        return jax.tree.map(lambda x: x[t, index], particles)

    def one_path(key: jax.Array) -> Particles:
        key_last, key_back = jax.random.split(key)
        last = jax.random.categorical(key_last, log_weights[-1])

        def back(index: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            key_t, t = xs
            chosen_next = at(t + 1, jnp.full((num_particles,), index))
            candidates = at(t, jnp.arange(num_particles))
            logits = log_weights[t] + transition_log_density(t + 1, candidates, chosen_next)
            earlier = jax.random.categorical(key_t, logits)
            return earlier, earlier

        times = jnp.arange(num_steps - 1)
        keys = jax.random.split(key_back, num_steps - 1)
        _, indices = jax.lax.scan(back, last, (keys, times), reverse=True)
        indices = jnp.concatenate([indices, last[None]])
        return jax.tree.map(lambda x: x[jnp.arange(num_steps), indices], particles)

    paths = jax.vmap(one_path)(jax.random.split(rng_key, num_samples))  # [M, T, ...]
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), paths)
