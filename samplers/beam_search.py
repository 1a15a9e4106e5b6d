"""Beam search and diverse verifier tree search (DVTS) over a `StepwiseModel`'s steps.

Each group (prompt) has N rows. A row's score is its cumulative log potential
s_t = s_{t-1}(parent) + log G_t (for the Bernoulli weighting rule, the aggregated log reward
of its prefix). At every step all live rows are extended and scored, then rows are selected
deterministically within blocks:

    beam search:  one block of N rows per group; keep the N / M best, copy each M times
    DVTS:         N / M independent subtrees of M rows; keep the best row of each subtree
                  and copy it M times (Beeching et al. 2024, "diverse verifier tree search")

where M = `expansions`. A finished row stays in the pool with its final score; only one copy of
it competes (further copies of a finished row score -inf), so finished beams do not crowd out
live ones. Ties go to the lower row index. The search ends after `max_steps` steps or when every
row is finished.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ppl.feynman_kac import Particles
from ppl.stepwise import StepwiseModel


class BeamResult(NamedTuple):
    particles: Particles  # the final rows, B = G x N
    scores: np.ndarray  # [B] cumulative log potentials (-inf: duplicate of a finished row)
    num_steps: int


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


def run(
    rng_key: jax.Array,
    model: StepwiseModel,
    particles: Particles,
    max_steps: int,
    expansions: int,
    diverse: bool = False,
    progress: bool = True,
) -> BeamResult:
    """Beam search (`diverse=False`) or DVTS (`diverse=True`) from initial rows `particles`.

    `expansions` (M) must divide N, the rows per group. Step t uses `fold_in(rng_key, t)`.
    """
    num_rows = jax.tree.leaves(particles)[0].shape[0]
    if num_rows % model.num_groups:
        raise ValueError(f"{num_rows} rows do not split into {model.num_groups} equal groups")
    num_particles = num_rows // model.num_groups
    if expansions < 1 or num_particles % expansions:
        raise ValueError(
            f"expansions must be >= 1 and divide the {num_particles} rows per group, "
            f"got {expansions}"
        )
    block = expansions if diverse else num_particles
    scores = np.zeros(num_rows)
    duplicate = np.zeros(num_rows, bool)  # a second or later copy of a finished row
    first_copy = np.tile(np.arange(expansions) == 0, num_rows // expansions)
    steps = 0
    with tqdm(total=max_steps, desc="beam steps", disable=not progress, leave=False) as bar:
        for t in range(1, max_steps + 1):
            finished = np.asarray(model.finished(particles))
            if finished.all():
                break
            extended = model.extend(jax.random.fold_in(rng_key, t), particles)
            increments = np.asarray(model.log_potential(particles, extended), np.float64)
            scores = scores + np.where(np.isnan(increments), -np.inf, increments)
            particles, steps = extended, t
            bar.update(1)
            if t == max_steps or np.asarray(model.finished(particles)).all():
                break
            ranked = np.where(duplicate, -np.inf, scores)
            ancestors = select_top(ranked, block, expansions)
            finished = np.asarray(model.finished(particles))
            particles = model.gather(particles, jnp.asarray(ancestors))
            scores = ranked[ancestors]
            duplicate = finished[ancestors] & ~first_copy
    return BeamResult(particles, np.where(duplicate, -np.inf, scores), steps)
