"""Conditional SMC and particle Gibbs for `HostConditionalFeynmanKac` models driven from the host.

Conditional SMC keeps one reference path per group alive through the run: row g * N (the
first row of group g) replays the reference's steps instead of sampling, its ancestor is
always itself, and the other N - 1 rows resample multinomially at every step from all N
(the reference included). Drawing the next reference from the final weights of such a run
is a Markov kernel that leaves the target path distribution invariant (Andrieu, Doucet and
Holenstein 2010); iterating it is particle Gibbs, the sampler Puri et al. run over LLM
reasoning steps with the reference particle kept across sweeps.

`init` / `step` / `run` mirror `ppl.samplers.particle_gibbs`: the state is every group's
reference (None before the first sweep, which is a plain particle filter resampling at every
step); `step` is one sweep and a new reference drawn from its final weights. Sweep k uses the
key `fold_in(rng_key, k)`. A model supports this through the methods of
`HostConditionalFeynmanKac`: `trace`, the path of given rows as a host object, and
`conditional_initial_sample` / `conditional_transition_sample`, the model's draws with the
reference rows replaying the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.feynman_kac import HostConditionalFeynmanKac, group_keys
from ppl.samplers import host_smc


class HostParticleGibbsState(NamedTuple):
    reference: Sequence[Any] | None  # one path per group (None: no sweep yet)
    sweep: int  # sweeps done


class HostParticleGibbsInfo(NamedTuple):
    result: host_smc.HostSMCResult  # the sweep's run over all groups
    reference_rows: np.ndarray  # [G] the final row each new reference was drawn from


class HostParticleGibbsResult(NamedTuple):
    state: HostParticleGibbsState  # the references after the last sweep
    sweeps: list[host_smc.HostSMCResult]  # every sweep's run; sweep k >= 1 updates sweep k - 1


def reference_rows(num_groups: int, num_particles: int) -> np.ndarray:
    """The row of each group that carries the reference: the group's first row."""
    return np.arange(num_groups) * num_particles


def conditional_init(
    rng_key: jax.Array,
    model: HostConditionalFeynmanKac,
    num_particles: int,
    reference: Sequence[Any],
) -> tuple[host_smc.HostSMCState, host_smc.HostSMCInfo]:
    """x_0 for G x `num_particles` rows with the reference rows holding the reference's
    initial state, weighted by G_0."""
    if num_particles < 2:
        raise ValueError(f"conditional SMC needs at least 2 particles, got {num_particles}")
    rows = reference_rows(model.num_groups, num_particles)
    particles = model.conditional_initial_sample(rng_key, num_particles, rows, reference)
    return host_smc.weigh_initial(model, particles, num_particles)


def conditional_step(
    rng_key: jax.Array,
    state: host_smc.HostSMCState,
    model: HostConditionalFeynmanKac,
    reference: Sequence[Any],
) -> tuple[host_smc.HostSMCState, host_smc.HostSMCInfo]:
    """Resample every group multinomially (the reference row keeps itself as its parent),
    propagate with the reference replayed, reweight."""
    key_resample, key_extend = jax.random.split(rng_key)
    num_groups, num_particles = state.log_weights.shape
    rows = reference_rows(num_groups, num_particles)
    everywhere = jnp.ones(num_groups, bool)
    ancestors = np.array(
        host_smc._resample_groups(
            group_keys(key_resample, model),
            jnp.asarray(state.log_weights),
            everywhere,
            "multinomial",
        )
    )
    ancestors[rows] = rows
    ancestors = host_smc.survivors_in_place(ancestors, num_particles)
    particles = model.gather(state.particles, jnp.asarray(ancestors))
    uniform = np.full(state.log_weights.shape, -np.log(num_particles))
    extended = model.conditional_transition_sample(
        key_extend, state.step + 1, particles, rows, reference
    )
    return host_smc.reweight_step(
        state, model, particles, extended, uniform, ancestors, np.ones(num_groups, bool)
    )


def run_conditional(
    rng_key: jax.Array,
    model: HostConditionalFeynmanKac,
    num_particles: int,
    num_steps: int,
    reference: Sequence[Any],
    progress: bool = True,
) -> host_smc.HostSMCResult:
    """Conditional SMC around `reference` (one path per group) for t = 0..num_steps-1, keys
    as in `host_smc.run` (x_0 with `fold_in(rng_key, 0)`, step t with `fold_in(rng_key, t)`)."""
    host_smc.check_run(num_steps)
    state, _ = conditional_init(jax.random.fold_in(rng_key, 0), model, num_particles, reference)

    def advance(
        key: jax.Array, state: host_smc.HostSMCState
    ) -> tuple[host_smc.HostSMCState, host_smc.HostSMCInfo]:
        return conditional_step(key, state, model, reference)

    return host_smc.run_steps(
        rng_key, state, model, num_steps, advance, "conditional SMC", progress
    )


def draw_reference(
    rng_key: jax.Array, model: HostConditionalFeynmanKac, result: host_smc.HostSMCResult
) -> tuple[np.ndarray, Sequence[Any]]:
    """Rows k_g ~ W_g of the final weights, one per group, and their paths."""
    log_weights = jnp.asarray(result.log_weights)
    keys = group_keys(rng_key, model)
    local = np.asarray(jax.vmap(jax.random.categorical)(keys, log_weights))
    rows = local + np.arange(log_weights.shape[0]) * log_weights.shape[1]
    return rows, model.trace(result.state.particles, rows.tolist())


def init(initial_reference: Sequence[Any] | None = None) -> HostParticleGibbsState:
    """The chain's start: one path per group, or None to start with a particle filter."""
    reference = None if initial_reference is None else list(initial_reference)
    return HostParticleGibbsState(reference, 0)


def sweep(
    rng_key: jax.Array,
    model: HostConditionalFeynmanKac,
    num_particles: int,
    num_steps: int,
    reference: Sequence[Any] | None,
    progress: bool = True,
) -> host_smc.HostSMCResult:
    """A particle filter resampling at every step (no reference yet) or conditional SMC."""
    if reference is None:
        return host_smc.run(rng_key, model, num_particles, num_steps, "multinomial", 1.0, progress)
    return run_conditional(rng_key, model, num_particles, num_steps, reference, progress)


def step(
    rng_key: jax.Array,
    state: HostParticleGibbsState,
    model: HostConditionalFeynmanKac,
    num_particles: int,
    num_steps: int,
    progress: bool = True,
) -> tuple[HostParticleGibbsState, HostParticleGibbsInfo]:
    """One particle-Gibbs update: a sweep around the references, then new references drawn
    from its final weights."""
    key_run, key_pick = jax.random.split(rng_key)
    result = sweep(key_run, model, num_particles, num_steps, state.reference, progress)
    rows, reference = draw_reference(key_pick, model, result)
    return HostParticleGibbsState(reference, state.sweep + 1), HostParticleGibbsInfo(result, rows)


def run(
    rng_key: jax.Array,
    model: HostConditionalFeynmanKac,
    num_particles: int,
    num_steps: int,
    num_sweeps: int,
    initial_reference: Sequence[Any] | None = None,
    progress: bool = True,
) -> HostParticleGibbsResult:
    """`num_sweeps` particle-Gibbs sweeps of `num_particles` per group over t = 0..num_steps-1,
    from `initial_reference` (None: the first sweep is a particle filter); sweep k uses the
    key `fold_in(rng_key, k)`."""
    if num_sweeps < 1:
        raise ValueError(f"num_sweeps must be >= 1, got {num_sweeps}")
    state = init(initial_reference)
    sweeps = []
    for index in range(num_sweeps):
        state, info = step(
            jax.random.fold_in(rng_key, index), state, model, num_particles, num_steps, progress
        )
        sweeps.append(info.result)
    return HostParticleGibbsResult(state, sweeps)
