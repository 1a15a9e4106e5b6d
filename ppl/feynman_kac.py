"""The state-space / Feynman-Kac model protocol that every particle algorithm runs on.

A Feynman-Kac model is a proposal chain and a potential per step:

    x_0 ~ M_0,   x_t ~ M_t(x_{t-1}, .),   weights G_0(x_0), G_t(x_{t-1}, x_t),

and it defines the path distribution

    Q_T(dx_{0:T}) ∝ M_0(dx_0) G_0(x_0) Π_t M_t(x_{t-1}, dx_t) G_t(x_{t-1}, x_t)

with normalizing constant Z_T. A state-space model p(x_0) Π p(x_t | x_{t-1}) Π p(y_t | x_t)
becomes one by choosing a proposal: the bootstrap choice M_t = p(x_t | x_{t-1}) gives
G_t = p(y_t | x_t); a guided proposal q gives
G_t = p(x_t | x_{t-1}) p(y_t | x_t) / q(x_t | x_{t-1}).
Either way Z_T = p(y_{0:T}), which SMC estimates without bias.

Particles are pytrees whose leaves share a leading particle axis of size N; every function
here acts on the whole particle batch at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Particles = Any  # a pytree whose leaves have a leading particle axis
InitialSample = Callable[[jax.Array, int], Particles]
TransitionSample = Callable[[jax.Array, jax.Array, Particles], Particles]
InitialLogPotential = Callable[[Particles], jax.Array]
LogPotential = Callable[[jax.Array, Particles, Particles], jax.Array]
Finished = Callable[[Particles], jax.Array]
Gather = Callable[[Particles, jax.Array], Particles]


class FeynmanKac(NamedTuple):
    """A Feynman-Kac model as pure functions (all vectorized over the particle axis).

    Attributes:
        initial_sample: `(rng_key, num_particles) -> x_0`, a draw from M_0.
        initial_log_potential: `x_0 -> log G_0(x_0)` [N].
        transition_sample: `(rng_key, t, x_{t-1}) -> x_t`, a draw from M_t (t >= 1).
        log_potential: `(t, x_{t-1}, x_t) -> log G_t` [N] (t >= 1). May be -inf (a dead
            particle); NaN is treated as -inf and counted in the run's diagnostics.
        finished: optional `x -> bool [N]`: finished particles are absorbed, i.e. kept
            unchanged with potential 1 (log 0) at every later step (variable-length models).
        gather: optional `(x, ancestors [N']) -> x[ancestors]`, the particles at the given
            indices; the default indexes every leaf's leading axis. Models whose particles
            hold arrays with the particle axis elsewhere (a KV cache) provide their own;
            such a model's `transition_sample` must itself return finished particles
            unchanged, since a sampler cannot select rows of leaves it cannot index.
    """

    initial_sample: InitialSample
    initial_log_potential: InitialLogPotential
    transition_sample: TransitionSample
    log_potential: LogPotential
    finished: Finished | None = None
    gather: Gather | None = None


def gather_particles(model: FeynmanKac, particles: Particles, ancestors: jax.Array) -> Particles:
    """`particles[ancestors]` through the model's `gather` (leading-axis indexing by default)."""
    if model.gather is not None:
        return model.gather(particles, ancestors)
    return jax.tree.map(lambda x: x[ancestors], particles)
