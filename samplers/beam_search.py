"""Beam search and diverse verifier tree search (DVTS) over a `HostFeynmanKac` model's steps.

Each group (prompt) has N rows. A row's score is its cumulative log potential
s_t = s_{t-1}(parent) + log G_t (for the Bernoulli weighting rule, the aggregated log reward
of its prefix). At every step all live rows are extended and scored, then rows are selected
deterministically within blocks:

    beam search:  one block of N rows per group; keep the N / M best, copy each M times
    DVTS:         N / M independent subtrees of M rows; keep the best row of each subtree
                  and copy it M times (Beeching et al. 2024, "diverse verifier tree search")

where M = `expansions`. A finished row stays in the pool with its final score; only one copy of
it competes (further copies of a finished row score -inf), so finished beams do not crowd out
live ones. Ties go to the lower row index. `init` / `step` / `run` mirror `ppl.samplers.host_smc`:
x_0 is drawn with `fold_in(rng_key, 0)`, step t (select, then extend and score) uses
`fold_in(rng_key, t)`, and the search covers t = 0..num_steps-1 or ends when every row is
finished.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ppl.feynman_kac import HostFeynmanKac, Particles


class BeamSearchState(NamedTuple):
    particles: Particles  # B = G x N rows, extended and scored, not yet selected
    scores: np.ndarray  # [B] cumulative log potentials
    duplicate: np.ndarray  # [B] bool: a second or later copy of a finished row
    step: int  # the time index t of `particles`


class BeamSearchInfo(NamedTuple):
    ancestors: np.ndarray  # [B] global parent row of each row (identity at the first step)


class BeamSearchResult(NamedTuple):
    particles: Particles  # the final rows, B = G x N
    scores: np.ndarray  # [B] cumulative log potentials (-inf: duplicate of a finished row)
    num_steps: int  # steps taken


def select_top(scores: np.ndarray, block: int, expansions: int) -> np.ndarray:
    """Global ancestors [B]: in each block of `block` rows, the block // expansions best rows
    (stable order of score, ties to the lower index), each repeated `expansions` times."""
    num_rows = scores.shape[0]
    if block % expansions or num_rows % block:
        raise ValueError(
            f"{num_rows} rows do not split into blocks of {block} with {expansions} expansions"
        )
    blocks = scores.reshape(-1, block)
    order = np.argsort(-blocks, axis=1, kind="stable")[:, : block // expansions]
    offsets = (np.arange(blocks.shape[0]) * block)[:, None]
    return np.repeat(order + offsets, expansions, axis=1).reshape(-1)


def _block(num_particles: int, expansions: int, diverse: bool) -> int:
    if expansions < 1 or num_particles % expansions:
        raise ValueError(
            f"expansions must be >= 1 and divide the {num_particles} rows per group, "
            f"got {expansions}"
        )
    return expansions if diverse else num_particles


def init(rng_key: jax.Array, model: HostFeynmanKac, num_particles: int) -> BeamSearchState:
    """x_0 for G x `num_particles` rows, every score 0 (the initial potential is not used)."""
    particles = model.initial_sample(rng_key, num_particles)
    num_rows = jax.tree.leaves(particles)[0].shape[0]
    if num_rows != model.num_groups * num_particles:
        raise ValueError(
            f"{num_rows} initial rows do not split into {model.num_groups} equal groups of "
            f"{num_particles} particles"
        )
    return BeamSearchState(particles, np.zeros(num_rows), np.zeros(num_rows, bool), 0)


def step(
    rng_key: jax.Array,
    state: BeamSearchState,
    model: HostFeynmanKac,
    expansions: int,
    diverse: bool = False,
) -> tuple[BeamSearchState, BeamSearchInfo]:
    """Select within blocks (not before the first step), then extend every live row and add
    its log potential to its score."""
    particles, scores, duplicate = state.particles, state.scores, state.duplicate
    num_rows = scores.shape[0]
    ancestors = np.arange(num_rows)
    if state.step > 0:
        block = _block(num_rows // model.num_groups, expansions, diverse)
        first_copy = np.tile(np.arange(expansions) == 0, num_rows // expansions)
        ranked = np.where(duplicate, -np.inf, scores)
        ancestors = select_top(ranked, block, expansions)
        finished = np.asarray(model.finished(particles))
        particles = model.gather(particles, jnp.asarray(ancestors))
        scores = ranked[ancestors]
        duplicate = finished[ancestors] & ~first_copy
    t = state.step + 1
    extended = model.transition_sample(rng_key, t, particles)
    increments = np.asarray(model.log_potential(t, particles, extended), np.float64)
    scores = scores + np.where(np.isnan(increments), -np.inf, increments)
    return BeamSearchState(extended, scores, duplicate, t), BeamSearchInfo(ancestors)


def run(
    rng_key: jax.Array,
    model: HostFeynmanKac,
    num_particles: int,
    num_steps: int,
    expansions: int,
    diverse: bool = False,
    progress: bool = True,
) -> BeamSearchResult:
    """Beam search (`diverse=False`) or DVTS (`diverse=True`) with `num_particles` rows per
    group over t = 0..num_steps-1. `expansions` (M) must divide `num_particles`."""
    _block(num_particles, expansions, diverse)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    state = init(jax.random.fold_in(rng_key, 0), model, num_particles)
    with tqdm(total=num_steps - 1, desc="beam steps", disable=not progress, leave=False) as bar:
        for t in range(1, num_steps):
            if np.asarray(model.finished(state.particles)).all():
                break
            state, _ = step(jax.random.fold_in(rng_key, t), state, model, expansions, diverse)
            bar.update(1)
    scores = np.where(state.duplicate, -np.inf, state.scores)
    return BeamSearchResult(state.particles, scores, state.step)
