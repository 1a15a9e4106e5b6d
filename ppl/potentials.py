"""Potential algebra: products, tempering and custom combinations of log potentials.

A log potential here is any function `(t, x_prev, x) -> log G_t` [N] of the `FeynmanKac`
protocol; combining them changes the target but not the algorithms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppl.feynman_kac import FeynmanKac, LogPotential


def product(*potentials: LogPotential) -> LogPotential:
    """G = Π_i G_i, i.e. log G = Σ_i log G_i (a -inf factor makes the product -inf)."""

    def log_potential(t: jax.Array, x_prev: object, x: object) -> jax.Array:
        return sum((p(t, x_prev, x) for p in potentials), start=jnp.zeros(()))

    return log_potential


def temper(potential: LogPotential, power: float | jax.Array) -> LogPotential:
    """G^power, i.e. power * log G; power 0 gives the constant 1 even where G = 0."""

    def log_potential(t: jax.Array, x_prev: object, x: object) -> jax.Array:
        value = potential(t, x_prev, x)
        return jnp.where(power == 0, 0.0, power * value)

    return log_potential


def temper_model(model: FeynmanKac, power: float | jax.Array) -> FeynmanKac:
    """The model with every potential, G_0 included, raised to `power` (see `temper`)."""
    tempered_initial = temper(lambda t, x_prev, x: model.initial_log_potential(x), power)
    return model._replace(
        initial_log_potential=lambda x: tempered_initial(jnp.zeros((), jnp.int32), None, x),
        log_potential=temper(model.log_potential, power),
    )
