"""Spread the particle axis over several devices with `jax.sharding`.

`shard_particles(model, sharding)` returns the same Feynman-Kac model with a sharding
constraint on every particle batch it produces, so XLA partitions the particles (and the
weights computed from them) across the devices of `sharding`'s mesh. The samplers need no
change: resampling becomes a cross-device gather and the weight normalization a reduction,
both inserted by the compiler.

    mesh = jax.sharding.Mesh(jax.devices(), ("particles",))
    sharded = shard_particles(model, NamedSharding(mesh, PartitionSpec("particles")))
    result = jax.jit(lambda key: smc.run(key, sharded, 1_000_000, T))(key)
"""

from __future__ import annotations

import jax
from jax.sharding import Sharding

from ppl.feynman_kac import FeynmanKac, Particles


def shard_particles(model: FeynmanKac, sharding: Sharding) -> FeynmanKac:
    """The model with its particles constrained to `sharding` (leading axis = particles)."""

    def constrain(particles: Particles) -> Particles:
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), particles)

    return model._replace(
        initial_sample=lambda key, n: constrain(model.initial_sample(key, n)),
        transition_sample=lambda key, t, x: constrain(model.transition_sample(key, t, x)),
    )
