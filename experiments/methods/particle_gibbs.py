"""Particle Gibbs over reasoning steps (Puri et al.): `pg`."""

from __future__ import annotations

import dataclasses

import jax

from ppl.experiments.methods import METHODS
from ppl.experiments.reasoning import (
    MethodInputs,
    ProblemOutcome,
    _outcomes,
    _pool_sweeps,
    _total_spent,
)
from ppl.samplers import host_particle_gibbs


@dataclasses.dataclass(frozen=True)
class ParticleGibbs:
    """`num_sweeps` sweeps of N / `num_sweeps` particles (a particle filter, then conditional
    SMC around a reference drawn from the previous sweep), so that the budget N =
    `inputs.budget` counts every particle slot of every sweep (the replayed reference
    included; its tokens are not counted as generated). With N not divisible by `num_sweeps`
    or fewer than 2 particles per sweep it runs one sweep (a particle filter). The answer is
    selected from the final particles of all sweeps, each sweep's normalized weights divided
    by the number of sweeps."""

    name: str = "pg"
    num_sweeps: int = 2
    selection: str = "weighted_vote"

    def __call__(self, rng_key: jax.Array, inputs: MethodInputs) -> list[ProblemOutcome]:
        budget, num_sweeps = inputs.budget, self.num_sweeps
        sweeps = num_sweeps if budget % num_sweeps == 0 and budget // num_sweeps >= 2 else 1
        ssm = inputs.model()
        key_run, key_select = jax.random.split(rng_key)
        results = host_particle_gibbs.run(
            key_run, ssm, budget // sweeps, ssm.num_steps, sweeps, progress=inputs.progress
        ).sweeps
        texts, scores = _pool_sweeps(ssm, results)
        spent = _total_spent(results)
        return _outcomes(
            self.name, budget, ssm, spent, texts, scores, self.selection, key_select, results
        )


METHODS.register("pg", "particle Gibbs: sweeps of conditional SMC around a kept reference")(
    ParticleGibbs()
)
