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
from ppl.models.reasoning.ssm import ReasoningSSM
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
        lm, prompts, verifier, budget = inputs.lm, inputs.prompts, inputs.verifier, inputs.budget
        weighting, settings, progress = inputs.weighting, inputs.settings, inputs.progress
        inverse_temperatures, num_sweeps, selection = (
            self.inverse_temperatures,
            self.num_sweeps,
            self.selection,
        )
        levels = len(inverse_temperatures)
        per_sweep = budget // (levels * num_sweeps)
        if budget % (levels * num_sweeps) or per_sweep < 2:
            return ParticleGibbs(self.name, num_sweeps, selection)(rng_key, inputs)
        betas = np.tile(np.asarray(inverse_temperatures, np.float64), len(prompts))
        ssm = ReasoningSSM(
            lm,
            [p for p in prompts for _ in range(levels)],
            verifier,
            weighting,
            settings,
            inverse_temperatures=betas.tolist(),
        )
        key_run, key_select = jax.random.split(rng_key)
        result = host_parallel_tempering.run(
            key_run,
            ssm,
            per_sweep,
            ssm.num_steps,
            num_sweeps,
            np.arange(len(prompts) * levels).reshape(-1, levels),
            betas,
            progress=progress,
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
            selection,
            key_select,
            result.sweeps,
            levels,
        )


METHODS.register("pgpt", "particle Gibbs with parallel tempering: tempered chains, swaps")(
    ParticleGibbsTempering()
)
