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

Two forms of one protocol: `FeynmanKac`, pure traceable functions that the jitted samplers
(`ppl.samplers.smc`, ...) run inside `lax.scan`, and `HostFeynmanKac`, the same methods with
the same arguments called from Python, for models whose steps cannot be traced (an LLM
reasoning step scored by a verifier); the host samplers (`ppl.samplers.host_smc`, ...) run
those, with G independent particle systems in one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

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
        num_steps: optional horizon: the number of time steps the model is defined for (a
            state-space model's number of observations), or None for any number. The
            samplers refuse a longer run (`check_horizon`): past the last observation,
            `observations[t]` would be clamped by JAX and the last one silently reused.
    """

    initial_sample: InitialSample
    initial_log_potential: InitialLogPotential
    transition_sample: TransitionSample
    log_potential: LogPotential
    finished: Finished | None = None
    gather: Gather | None = None
    num_steps: int | None = None


def check_horizon(model: FeynmanKac, num_steps: int) -> None:
    """A ValueError if a run of `num_steps` goes past the model's horizon `model.num_steps`."""
    if model.num_steps is not None and num_steps > model.num_steps:
        raise ValueError(
            f"num_steps={num_steps} is more than the {model.num_steps} time steps the model is "
            "defined for (its observations)"
        )


def gather_particles(model: FeynmanKac, particles: Particles, ancestors: jax.Array) -> Particles:
    """`particles[ancestors]` through the model's `gather` (leading-axis indexing by default)."""
    if model.gather is not None:
        return model.gather(particles, ancestors)
    return jax.tree.map(lambda x: x[ancestors], particles)


class HostFeynmanKac(Protocol):
    """A Feynman-Kac model stepped from the host: the same methods, argument names and order
    as `FeynmanKac`, as ordinary Python methods that may decode text with a language model or
    call a programmatic checker between compiled pieces (`ppl.models.reasoning.ssm`).

    The particles hold B = G x N rows: G independent particle systems (one per prompt, say)
    of N particles each, in one batch so that the device runs them together. Rows are
    group-major (row g * N + i is particle i of group g). N is set once, by
    `initial_sample(rng_key, num_particles)`; everything downstream reads it from the shapes
    of the particles, so a model object is immutable configuration and whatever a run
    accumulates (a budget meter, say) lives in its particles.

        x_0 ~ M_0                        `initial_sample(rng_key, num_particles)`  B rows
        log G_0(x_0)                     `initial_log_potential(particles)`        [B]
        x_t ~ M_t(x_{t-1}, .)            `transition_sample(rng_key, t, particles)`
        log G_t(x_{t-1}, x_t)            `log_potential(t, previous, particles)`   [B]
        finished rows are absorbed       `finished(particles)`                     [B] bool
        resampling is a gather           `gather(particles, ancestors)`            ancestors [B]

    `transition_sample` must leave finished rows unchanged, and `log_potential` gives every
    row its incremental log weight (0 keeps an absorbed row's weight as it is; NaN counts as
    -inf). Ancestors are global row indices, always drawn within a row's group.

    A model may name its groups with stable integer ids (`group_ids`, a tuple of G ints, say
    the problems' indices in a sweep); every per-group draw of the host samplers and of the
    model uses `group_keys(rng_key, model)`, `fold_in(rng_key, id_g)`, so a group's results do
    not depend on which other groups share the batch. Without `group_ids` the ids are 0..G-1.
    """

    @property
    def num_groups(self) -> int:
        """G, the number of independent particle systems in the batch."""
        ...

    def initial_sample(self, rng_key: jax.Array, num_particles: int) -> Particles:
        """x_0 for G x `num_particles` rows."""
        ...

    def initial_log_potential(self, particles: Particles) -> np.ndarray:
        """log G_0(x_0) [B]."""
        ...

    def transition_sample(self, rng_key: jax.Array, t: int, particles: Particles) -> Particles:
        """x_t for every live row; finished rows come back unchanged."""
        ...

    def log_potential(self, t: int, previous: Particles, particles: Particles) -> np.ndarray:
        """Incremental log weights [B] of the step `previous -> particles` to time t."""
        ...

    def finished(self, particles: Particles) -> np.ndarray:
        """[B] bool: rows that are complete and must not be extended."""
        ...

    def gather(self, particles: Particles, ancestors: jax.Array) -> Particles:
        """Rows `ancestors` [B] of the batch."""
        ...


def group_ids(model: Any) -> tuple[int, ...]:
    """The model's stable group ids (`model.group_ids`), or 0..G-1 when it has none."""
    ids = getattr(model, "group_ids", None)
    return tuple(range(model.num_groups)) if ids is None else tuple(ids)


def group_keys(rng_key: jax.Array, model: Any) -> jax.Array:
    """One key per group [G], `fold_in(rng_key, id_g)`: a group's draws depend only on the
    run's key and its own id, not on the batch it shares (`HostFeynmanKac`)."""
    return fold_in_each(rng_key, group_ids(model))


def row_keys(rng_key: jax.Array, model: Any, num_particles: int) -> jax.Array:
    """One key per row [G x N], `fold_in(fold_in(rng_key, id_g), i)` for particle i of
    group g, so that row's draws do not depend on the batch either."""
    keys = group_keys(rng_key, model)
    slots = np.arange(num_particles, dtype=np.uint32)
    return jax.vmap(lambda key: fold_in_each(key, slots))(keys).reshape(-1)


def fold_in_each(rng_key: jax.Array, data: Sequence[int] | np.ndarray) -> jax.Array:
    """`[fold_in(rng_key, d) for d in data]` as one key array."""
    values = np.asarray(data, dtype=np.uint32).reshape(-1)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng_key, values)


class HostConditionalFeynmanKac(HostFeynmanKac, Protocol):
    """A host model that conditional SMC can run on: it keeps one reference path per group
    alive, in the rows `reference_rows` (a group's first row), by replaying its steps.

    A reference is a host object per group (`trace` gives them), e.g. a list of steps.
    """

    def trace(self, particles: Particles, rows: Sequence[int]) -> Sequence[Any]:
        """The paths of `rows` so far, one host object per row."""
        ...

    def conditional_initial_sample(
        self,
        rng_key: jax.Array,
        num_particles: int,
        reference_rows: np.ndarray,
        reference: Sequence[Any],
    ) -> Particles:
        """`initial_sample`, with row `reference_rows[g]` holding the initial state of
        `reference[g]`."""
        ...

    def conditional_transition_sample(
        self,
        rng_key: jax.Array,
        t: int,
        particles: Particles,
        reference_rows: np.ndarray,
        reference: Sequence[Any],
    ) -> Particles:
        """`transition_sample`, with row `reference_rows[g]` replaying the step of
        `reference[g]` to time t."""
        ...


class HostTemperedFeynmanKac(HostConditionalFeynmanKac, Protocol):
    """A conditional host model whose groups are tempered (group g's potentials raised to its
    inverse temperature beta_g), for parallel tempering."""

    def path_log_potential(self, particles: Particles, rows: Sequence[int]) -> np.ndarray:
        """V(x) [len(rows)], the untempered total log potential of the paths of `rows`."""
        ...
