"""Particle Gibbs for the latent path of a `FeynmanKac` model (fixed parameters).

The chain x^{(0)}, x^{(1)}, ... on paths x_{0:T} iterates the conditional SMC kernel
(`ppl.samplers.conditional_smc`): x^{(k+1)} is drawn from the genealogy of a conditional SMC run
around x^{(k)}. Each update leaves the path distribution Q_T (for a state-space model, the
smoothing distribution p(x_{0:T} | y_{0:T})) invariant, and the chain is ergodic for any
N >= 2, so averages over the chain converge to smoothing expectations. With
`transition_log_density` the kernel uses ancestor sampling (PGAS), which mixes well even with
few particles; without it the early states of the path mix slowly when the particle system
degenerates (the new path tends to coalesce with the reference before the final steps).

`init` gives the chain's start, `step` is one update (a `ParticleGibbsState` holds the current
reference path), and `run` scans `step` over iterations in one `lax.scan`; wrap `run` in
`jax.jit` with `model` and the integer arguments static. `ppl.samplers.host_particle_gibbs` is
the same chain for host-stepped models.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl import checks
from ppl.feynman_kac import FeynmanKac, Particles
from ppl.progress import scan_with_progress
from ppl.samplers import conditional_smc, smc
from ppl.samplers.conditional_smc import TransitionLogDensity
from ppl.samplers.genealogy import trajectories


def initial_path(
    rng_key: jax.Array, model: FeynmanKac, num_particles: int, num_steps: int
) -> Particles:
    """One path (leaves [T, ...]) from a plain SMC run: the genealogy of k ~ W_{T-1}."""
    key_run, key_pick = jax.random.split(rng_key)
    result = smc.run(key_run, model, num_particles, num_steps)
    index = jax.random.categorical(key_pick, result.log_weights[-1])
    paths = trajectories(result.particles, result.info.ancestors)
    return jax.tree.map(lambda x: x[:, index], paths)


class ParticleGibbsState(NamedTuple):
    reference: Particles  # the current path, leaves [T, ...]


class ParticleGibbsInfo(NamedTuple):
    final_index: jax.Array  # the final particle of the sweep whose genealogy is the new path
    ess: jax.Array  # [T] effective sample sizes of the sweep
    num_nan: jax.Array  # [T] NaN potentials met in the sweep


class ParticleGibbsResult(NamedTuple):
    state: ParticleGibbsState  # after the last update
    info: ParticleGibbsInfo  # per update, leaves stacked on a leading axis
    paths: Particles  # leaves [num_iterations, T, ...]: the path after each update


def init(
    rng_key: jax.Array,
    model: FeynmanKac,
    num_particles: int,
    num_steps: int,
    initial_reference: Particles | None = None,
    transition_log_density: TransitionLogDensity | None = None,
) -> ParticleGibbsState:
    """The chain's start: `initial_reference` (leaves [T, ...]) or, if None, one path from a
    plain SMC run (`initial_path`), cast to the dtypes an update returns."""
    if initial_reference is None:
        initial_reference = initial_path(rng_key, model, num_particles, num_steps)

    def update(reference: Particles) -> Particles:
        return conditional_smc.run(
            rng_key, model, reference, num_particles, num_steps, transition_log_density
        ).path

    # The scan carry must keep one dtype: cast the start to the dtype the kernel returns.
    out = jax.eval_shape(update, initial_reference)
    start = jax.tree.map(lambda x, s: jnp.asarray(x, s.dtype), initial_reference, out)
    return ParticleGibbsState(start)


def step(
    rng_key: jax.Array,
    state: ParticleGibbsState,
    model: FeynmanKac,
    num_particles: int,
    num_steps: int,
    transition_log_density: TransitionLogDensity | None = None,
) -> tuple[ParticleGibbsState, ParticleGibbsInfo]:
    """One particle-Gibbs update: a conditional SMC sweep around the reference and a new path
    from its genealogy."""
    result = conditional_smc.run(
        rng_key, model, state.reference, num_particles, num_steps, transition_log_density
    )
    info = ParticleGibbsInfo(result.final_index, result.ess, result.num_nan)
    return ParticleGibbsState(result.path), info


def run(
    rng_key: jax.Array,
    model: FeynmanKac,
    num_particles: int,
    num_steps: int,
    num_iterations: int,
    initial_reference: Particles | None = None,
    transition_log_density: TransitionLogDensity | None = None,
    progress: bool = False,
) -> ParticleGibbsResult:
    """Run `num_iterations` particle-Gibbs updates; `paths` holds the path after each update,
    leaves [num_iterations, T, ...] (the initial reference is not included; discard burn-in
    yourself).

    Args:
        initial_reference: the starting path (leaves [T, ...]); None starts from one plain
            SMC run with `num_particles` particles and a path drawn from its final weights.
        transition_log_density: `(t, x_prev, x) -> [N]` log M_t(x_prev, x); given, each
            update uses ancestor sampling (see `ppl.samplers.conditional_smc`).
        progress: run the chain from the host in compiled chunks with a progress bar (same
            draws; the call is then not traceable by `jax.jit`).
    """
    num_iterations = checks.count("num_iterations", num_iterations)
    key_init, key_chain = jax.random.split(rng_key)
    state = init(
        key_init, model, num_particles, num_steps, initial_reference, transition_log_density
    )

    def body(
        state: ParticleGibbsState, key: jax.Array
    ) -> tuple[ParticleGibbsState, tuple[Particles, ParticleGibbsInfo]]:
        new_state, info = step(key, state, model, num_particles, num_steps, transition_log_density)
        return new_state, (new_state.reference, info)

    keys = jax.random.split(key_chain, num_iterations)
    if progress:
        final, (paths, info) = scan_with_progress(body, state, keys, description="particle Gibbs")
    else:
        final, (paths, info) = jax.lax.scan(body, state, keys)
    return ParticleGibbsResult(final, info, paths)
