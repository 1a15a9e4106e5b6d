"""Particle Gibbs with parallel tempering over reasoning steps: `pgpt`."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ppl.experiments.methods import METHODS
from ppl.experiments.methods.particle_gibbs import ParticleGibbs
from ppl.experiments.reasoning import (
    MethodInputs,
    ProblemOutcome,
    _outcomes,
    _pool_sweeps,
    _total_spent,
)
from ppl.samplers import host_parallel_tempering


@dataclasses.dataclass(frozen=True)
class ParticleGibbsTempering:
    """Per problem, K = len(`inverse_temperatures`) chains with tempered verifier potentials,
    `num_sweeps` sweeps of P particles each and reference swaps between neighbouring
    temperatures; the budget N = `inputs.budget` = K x sweeps x P counts every particle slot
    of every chain. The answer is selected from the beta = 1 chain's final particles of all
    sweeps. With N < 2 K x sweeps (or N not a multiple of K x sweeps) it runs particle Gibbs
    (`ParticleGibbs`)."""

    name: str = "pgpt"
    inverse_temperatures: tuple[float, ...] = (1.0, 0.5)
    num_sweeps: int = 2
    selection: str = "weighted_vote"

    def __call__(self, rng_key: jax.Array, inputs: MethodInputs) -> list[ProblemOutcome]:
        budget, num_sweeps = inputs.budget, self.num_sweeps
        levels = len(self.inverse_temperatures)
        per_sweep = budget // (levels * num_sweeps)
        if budget % (levels * num_sweeps) or per_sweep < 2:
            return ParticleGibbs(self.name, num_sweeps, self.selection)(rng_key, inputs)
        num_prompts = len(inputs.prompts)
        betas = np.tile(np.asarray(self.inverse_temperatures, np.float64), num_prompts)
        ssm = inputs.model(chains=levels, inverse_temperatures=betas.tolist())
        key_run, key_select = jax.random.split(rng_key)
        result = host_parallel_tempering.run(
            key_run,
            ssm,
            per_sweep,
            ssm.num_steps,
            num_sweeps,
            np.arange(num_prompts * levels).reshape(-1, levels),
            betas,
            progress=inputs.progress,
        )
        texts, scores = _pool_sweeps(ssm, result.sweeps, levels)
        spent = _total_spent(result.sweeps)
        return _outcomes(
            self.name,
            budget,
            ssm,
            spent,
            texts,
            scores,
            self.selection,
            key_select,
            result.sweeps,
            levels,
        )


METHODS.register("pgpt", "particle Gibbs with parallel tempering: tempered chains, swaps")(
    ParticleGibbsTempering()
)
