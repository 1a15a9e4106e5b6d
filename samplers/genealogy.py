"""Genealogy of a particle system: the ancestral paths of the final particles."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppl.feynman_kac import Particles


def ancestral_indices(ancestors: jax.Array) -> jax.Array:
    """[T, N]: row t holds the index, at time t, of the ancestor of final particle n.

    `ancestors[t, i]` is the parent (at t - 1) of particle i at time t, as `SMCInfo` records
    it; the last row of the result is the identity.
    """
    last = jnp.arange(ancestors.shape[1], dtype=ancestors.dtype)

    def back(index: jax.Array, parents: jax.Array) -> tuple[jax.Array, jax.Array]:
        earlier = parents[index]
        return earlier, earlier

    _, earlier = jax.lax.scan(back, last, ancestors[1:], reverse=True)  # times 0..T-2
    return jnp.concatenate([earlier, last[None]], axis=0)


def trajectories(history: Particles, ancestors: jax.Array) -> Particles:
    """The surviving paths x_{0:T}^{(n)} ([T, N, ...] leaves) of the final particles."""
    index = ancestral_indices(ancestors)
    return jax.tree.map(lambda x: jax.vmap(lambda xt, it: xt[it])(x, index), history)
