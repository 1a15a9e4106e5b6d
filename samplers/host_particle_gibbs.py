"""Conditional SMC and particle Gibbs for `StepwiseModel`s driven from the host.

Conditional SMC keeps one reference path per group alive through the run: row g * N (the
first row of group g) replays the reference's steps instead of sampling, its ancestor is
always itself, and the other N - 1 rows resample multinomially at every step from all N
(the reference included). Drawing the next reference from the final weights of such a run
is a Markov kernel that leaves the target path distribution invariant (Andrieu, Doucet and
Holenstein 2010); iterating it is particle Gibbs, the sampler Puri et al. run over LLM
reasoning steps with the reference particle kept across sweeps.

A model supports this through two more methods (`ConditionalStepwiseModel`): `trace`, the
path of given rows as a host object, and `extend_conditional`, `extend` with the reference
rows replaying their next step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ppl.feynman_kac import Particles
from ppl.samplers import host_smc
from ppl.stepwise import StepwiseModel


class ConditionalStepwiseModel(StepwiseModel, Protocol):
    def trace(self, particles: Particles, rows: Sequence[int]) -> Sequence[Any]:
        """The paths of `rows` so far, one host object per row, for `extend_conditional`."""
        ...

    def extend_conditional(
        self,
        rng_key: jax.Array,
        particles: Particles,
        reference_rows: np.ndarray,
        reference: Sequence[Any],
    ) -> Particles:
        """`extend`, with row `reference_rows[g]` replaying the next step of `reference[g]`."""
        ...


def reference_rows(num_groups: int, num_particles: int) -> np.ndarray:
    """The row of each group that carries the reference: the group's first row."""
    return np.arange(num_groups) * num_particles


def conditional_step(
    rng_key: jax.Array,
    state: host_smc.HostSMCState,
    model: ConditionalStepwiseModel,
    reference: Sequence[Any],
) -> tuple[host_smc.HostSMCState, host_smc.HostSMCInfo]:
    """Resample every group multinomially (the reference row keeps itself as its parent),
    extend with the reference replayed, reweight."""
    key_resample, key_extend = jax.random.split(rng_key)
    num_groups, num_particles = state.log_weights.shape
    rows = reference_rows(num_groups, num_particles)
    everywhere = jnp.ones(num_groups, bool)
    ancestors = np.array(
        host_smc._resample_groups(
            key_resample, jnp.asarray(state.log_weights), everywhere, "multinomial"
        )
    )
    ancestors[rows] = rows
    ancestors = host_smc.survivors_in_place(ancestors, num_particles)
    particles = model.gather(state.particles, jnp.asarray(ancestors))
    uniform = np.full(state.log_weights.shape, -np.log(num_particles))
    extended = model.extend_conditional(key_extend, particles, rows, reference)
    return host_smc.reweight_step(
        state, model, particles, extended, uniform, ancestors, np.ones(num_groups, bool)
    )


def run_conditional(
    rng_key: jax.Array,
    model: ConditionalStepwiseModel,
    particles: Particles,
    reference: Sequence[Any],
    max_steps: int,
    initial_log_potentials: np.ndarray | None = None,
    progress: bool = True,
) -> host_smc.HostSMCResult:
    """Conditional SMC around `reference` (one path per group) from initial rows `particles`
    whose reference rows already hold the reference's initial state."""
    state, _ = host_smc.init(model, particles, initial_log_potentials)

    def advance(
        key: jax.Array, state: host_smc.HostSMCState
    ) -> tuple[host_smc.HostSMCState, host_smc.HostSMCInfo]:
        return conditional_step(key, state, model, reference)

    return host_smc.run_steps(
        rng_key, state, model, max_steps, advance, "conditional SMC", progress
    )


def draw_reference(
    rng_key: jax.Array, model: ConditionalStepwiseModel, result: host_smc.HostSMCResult
) -> tuple[np.ndarray, Sequence[Any]]:
    """Rows k_g ~ W_g of the final weights, one per group, and their paths."""
    log_weights = jnp.asarray(result.log_weights)
    local = np.asarray(jax.random.categorical(rng_key, log_weights, axis=-1))
    rows = local + np.arange(log_weights.shape[0]) * log_weights.shape[1]
    return rows, model.trace(result.state.particles, rows.tolist())


def particle_gibbs(
    rng_key: jax.Array,
    model: ConditionalStepwiseModel,
    start: Callable[[Sequence[Any] | None], tuple[Particles, np.ndarray | None]],
    num_sweeps: int,
    max_steps: int,
    progress: bool = True,
) -> list[host_smc.HostSMCResult]:
    """`num_sweeps` sweeps: a particle filter (resampling at every step), then conditional
    SMC around a reference drawn from the previous sweep's final weights.

    Args:
        start: `reference -> (x_0 rows, log G_0 or None)`, called with None for the first
            sweep; for later sweeps the reference rows (`reference_rows`) must hold the
            reference's initial state.
    Returns every sweep's result; sweep k >= 1 is the particle-Gibbs update of sweep k - 1.
    """
    if num_sweeps < 1:
        raise ValueError(f"num_sweeps must be >= 1, got {num_sweeps}")
    results = []
    reference: Sequence[Any] | None = None
    for sweep in range(num_sweeps):
        key = jax.random.fold_in(rng_key, sweep)
        key_run, key_pick = jax.random.split(key)
        particles, log_g0 = start(reference)
        if reference is None:
            result = host_smc.run(
                key_run, model, particles, max_steps, "multinomial", 1.0, log_g0, progress
            )
        else:
            result = run_conditional(
                key_run, model, particles, reference, max_steps, log_g0, progress
            )
        results.append(result)
        _, reference = draw_reference(key_pick, model, result)
    return results
