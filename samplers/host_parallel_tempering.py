"""Particle Gibbs with parallel tempering for `ConditionalStepwiseModel`s, from the host
(the variant Puri et al. 2025 run over LLM reasoning steps).

Each problem has a ladder of K groups in the batch at inverse temperatures
1 = beta_0 > beta_1 > ... > beta_{K-1} >= 0; group k targets the path distribution with its
potential raised to beta_k (the model applies the tempering). Every sweep updates all groups
with one conditional-SMC sweep around their references (`ppl.samplers.host_particle_gibbs`), then
proposes to swap the references of neighbours (k, k+1) -- k even on even sweeps, odd on odd
sweeps -- accepted with probability

    min(1, exp((beta_k - beta_{k+1}) (V(x^{(k+1)}) - V(x^{(k)})))),

V(x) the path's untempered total log potential; the proposal densities cancel. Both moves
leave the product of the tempered targets invariant, so the beta_0 groups sample the target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from ppl.feynman_kac import Particles
from ppl.samplers import host_particle_gibbs, host_smc
from ppl.samplers.host_particle_gibbs import ConditionalStepwiseModel

PathLogPotential = Callable[[Particles, Sequence[int]], np.ndarray]


class TemperingResult(NamedTuple):
    sweeps: list[host_smc.HostSMCResult]  # every sweep's run over all groups
    swap_attempted: np.ndarray  # [num_sweeps, num_ladders, K - 1] bool
    swap_accepted: np.ndarray  # [num_sweeps, num_ladders, K - 1] bool
    references: list[Any]  # every group's path after the last sweep's swaps (the chain state)


def swap_neighbours(
    rng_key: jax.Array,
    references: list[Any],
    values: np.ndarray,
    ladders: np.ndarray,
    inverse_temperatures: np.ndarray,
    parity: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Propose swaps of the references (and values) of ladder neighbours (k, k+1) with
    k % 2 == parity, in place; returns (attempted, accepted) [num_ladders, K - 1]."""
    num_ladders, levels = ladders.shape
    attempted = np.zeros((num_ladders, levels - 1), bool)
    accepted = np.zeros((num_ladders, levels - 1), bool)
    uniforms = np.asarray(jax.random.uniform(rng_key, (num_ladders, max(levels - 1, 1))))
    for ladder in range(num_ladders):
        for k in range(parity, levels - 1, 2):
            a, b = ladders[ladder, k], ladders[ladder, k + 1]
            log_ratio = (inverse_temperatures[a] - inverse_temperatures[b]) * (
                values[b] - values[a]
            )
            attempted[ladder, k] = True
            if np.log(uniforms[ladder, k]) < log_ratio:  # NaN never accepts
                references[a], references[b] = references[b], references[a]
                values[a], values[b] = values[b], values[a]
                accepted[ladder, k] = True
    return attempted, accepted


def particle_gibbs_tempering(
    rng_key: jax.Array,
    model: ConditionalStepwiseModel,
    start: Callable[[Sequence[Any] | None], tuple[Particles, np.ndarray | None]],
    path_log_potential: PathLogPotential,
    ladders: np.ndarray,
    inverse_temperatures: np.ndarray,
    num_sweeps: int,
    max_steps: int,
    initial_references: Sequence[Any] | None = None,
    progress: bool = True,
) -> TemperingResult:
    """`num_sweeps` sweeps of particle Gibbs on every group with reference swaps.

    Args:
        ladders: [num_ladders, K] group indices, each row one problem's groups from the
            target (beta = 1) to the hottest.
        inverse_temperatures: [G] the beta of every group (the model must temper with them).
        path_log_potential: `(particles, rows) -> V` [len(rows)], untempered.
        initial_references: one path per group to start from; None starts with a particle
            filter sweep.
    """
    if num_sweeps < 1:
        raise ValueError(f"num_sweeps must be >= 1, got {num_sweeps}")
    ladders = np.asarray(ladders)
    sweeps, attempted, accepted = [], [], []
    references = None if initial_references is None else list(initial_references)
    for sweep in range(num_sweeps):
        key_run, key_pick, key_swap = jax.random.split(jax.random.fold_in(rng_key, sweep), 3)
        particles, log_g0 = start(references)
        if references is None:
            result = host_smc.run(
                key_run, model, particles, max_steps, "multinomial", 1.0, log_g0, progress
            )
        else:
            result = host_particle_gibbs.run_conditional(
                key_run, model, particles, references, max_steps, log_g0, progress
            )
        sweeps.append(result)
        rows, drawn = host_particle_gibbs.draw_reference(key_pick, model, result)
        references = list(drawn)
        values = np.asarray(path_log_potential(result.state.particles, rows.tolist()), float)
        tried, took = swap_neighbours(
            key_swap, references, values, ladders, np.asarray(inverse_temperatures), sweep % 2
        )
        attempted.append(tried)
        accepted.append(took)
    assert references is not None
    return TemperingResult(sweeps, np.asarray(attempted), np.asarray(accepted), references)
