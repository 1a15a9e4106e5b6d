"""Particle Gibbs with parallel tempering for `HostTemperedFeynmanKac` models, from the host
(the variant Puri et al. 2025 run over LLM reasoning steps).

Each problem has a ladder of K groups in the batch at inverse temperatures
1 = beta_0 > beta_1 > ... > beta_{K-1} >= 0; group k targets the path distribution with its
potential raised to beta_k (the model applies the tempering). Every sweep updates all groups
with one conditional-SMC sweep around their references (`ppl.samplers.host_particle_gibbs`), then
proposes to swap the references of neighbours (k, k+1) -- k even on even sweeps, odd on odd
sweeps -- accepted with probability

    min(1, exp((beta_k - beta_{k+1}) (V(x^{(k+1)}) - V(x^{(k)})))),

V(x) the path's untempered total log potential (`model.path_log_potential`); the proposal
densities cancel. Both moves leave the product of the tempered targets invariant, so the
beta_0 groups sample the target. The swap decision is `ppl.samplers.parallel_tempering`'s.

`init` / `step` / `run` mirror `ppl.samplers.parallel_tempering`; sweep k uses the key
`fold_in(rng_key, k)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from ppl.feynman_kac import HostTemperedFeynmanKac, group_keys
from ppl.samplers import host_particle_gibbs, host_smc
from ppl.samplers.parallel_tempering import swap_decisions


class HostParallelTemperingState(NamedTuple):
    references: list[Any] | None  # every group's path (None: no sweep yet)
    sweep: int  # sweeps done


class HostParallelTemperingInfo(NamedTuple):
    result: host_smc.HostSMCResult  # the sweep's run over all groups
    swap_attempted: np.ndarray  # [num_ladders, K - 1] bool
    swap_accepted: np.ndarray  # [num_ladders, K - 1] bool


class HostParallelTemperingResult(NamedTuple):
    state: HostParallelTemperingState  # the chain state after the last sweep's swaps
    sweeps: list[host_smc.HostSMCResult]  # every sweep's run over all groups
    swap_attempted: np.ndarray  # [num_sweeps, num_ladders, K - 1] bool
    swap_accepted: np.ndarray  # [num_sweeps, num_ladders, K - 1] bool

    @property
    def references(self) -> list[Any]:
        """Every group's path after the last sweep's swaps."""
        assert self.state.references is not None
        return self.state.references


def swap_neighbours(
    ladder_keys: jax.Array,
    references: list[Any],
    values: np.ndarray,
    ladders: np.ndarray,
    inverse_temperatures: np.ndarray,
    parity: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Propose swaps of the references (and values) of ladder neighbours (k, k+1) with
    k % 2 == parity, in place, ladder l deciding with `ladder_keys[l]`; returns (attempted,
    accepted) [num_ladders, K - 1]."""
    num_ladders, levels = ladders.shape
    uniforms = np.asarray(
        jax.vmap(lambda key: jax.random.uniform(key, (max(levels - 1, 1),)))(ladder_keys)
    )
    decisions = swap_decisions(
        np.log(uniforms[:, : levels - 1]),
        np.asarray(inverse_temperatures)[ladders],
        values[ladders],
        parity,
    )
    attempted, accepted = np.asarray(decisions[0]), np.asarray(decisions[1])
    for ladder in range(num_ladders):
        for k in np.flatnonzero(accepted[ladder]):
            a, b = ladders[ladder, k], ladders[ladder, k + 1]
            references[a], references[b] = references[b], references[a]
            values[a], values[b] = values[b], values[a]
    return attempted, accepted


def init(initial_references: Sequence[Any] | None = None) -> HostParallelTemperingState:
    """The chain's start: one path per group, or None to start with a particle filter."""
    references = None if initial_references is None else list(initial_references)
    return HostParallelTemperingState(references, 0)


def step(
    rng_key: jax.Array,
    state: HostParallelTemperingState,
    model: HostTemperedFeynmanKac,
    num_particles: int,
    num_steps: int,
    ladders: np.ndarray,
    inverse_temperatures: np.ndarray,
    progress: bool = True,
) -> tuple[HostParallelTemperingState, HostParallelTemperingInfo]:
    """One sweep on every group around its reference, new references drawn from the final
    weights, then swaps of neighbours (k, k+1) with k % 2 == sweep % 2."""
    key_run, key_pick, key_swap = jax.random.split(rng_key, 3)
    result = host_particle_gibbs.sweep(
        key_run, model, num_particles, num_steps, state.references, progress
    )
    rows, drawn = host_particle_gibbs.draw_reference(key_pick, model, result)
    references = list(drawn)
    values = np.asarray(model.path_log_potential(result.state.particles, rows.tolist()), float)
    ladders = np.asarray(ladders)
    attempted, accepted = swap_neighbours(
        group_keys(key_swap, model)[ladders[:, 0]],  # a ladder's key: its target group's
        references,
        values,
        np.asarray(ladders),
        np.asarray(inverse_temperatures),
        state.sweep % 2,
    )
    new_state = HostParallelTemperingState(references, state.sweep + 1)
    return new_state, HostParallelTemperingInfo(result, attempted, accepted)


def run(
    rng_key: jax.Array,
    model: HostTemperedFeynmanKac,
    num_particles: int,
    num_steps: int,
    num_sweeps: int,
    ladders: np.ndarray,
    inverse_temperatures: np.ndarray,
    initial_references: Sequence[Any] | None = None,
    progress: bool = True,
) -> HostParallelTemperingResult:
    """`num_sweeps` sweeps of particle Gibbs on every group with reference swaps.

    Args:
        ladders: [num_ladders, K] group indices, each row one problem's groups from the
            target (beta = 1) to the hottest.
        inverse_temperatures: [G] the beta of every group (the model must temper with them).
        initial_references: one path per group to start from; None starts with a particle
            filter sweep.
    """
    if num_sweeps < 1:
        raise ValueError(f"num_sweeps must be >= 1, got {num_sweeps}")
    state = init(initial_references)
    sweeps, attempted, accepted = [], [], []
    for index in range(num_sweeps):
        state, info = step(
            jax.random.fold_in(rng_key, index),
            state,
            model,
            num_particles,
            num_steps,
            ladders,
            inverse_temperatures,
            progress,
        )
        sweeps.append(info.result)
        attempted.append(info.swap_attempted)
        accepted.append(info.swap_accepted)
    return HostParallelTemperingResult(state, sweeps, np.asarray(attempted), np.asarray(accepted))
