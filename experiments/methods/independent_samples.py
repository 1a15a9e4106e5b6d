"""N independent generations per prompt, scored by the verifier's aggregated reward, and four
ways to pick the answer: `bon`, `wbon`, `sc`, `bom`."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ppl.experiments.methods import METHODS
from ppl.experiments.reasoning import MethodInputs, ProblemOutcome, _by_group, _outcomes
from ppl.samplers import host_smc
from ppl.samplers.selection import ANSWER_SELECTIONS


@dataclasses.dataclass(frozen=True)
class IndependentSamples:
    """N = `inputs.budget` independent generations per prompt (a particle filter that never
    resamples); the answer by `selection` (a rule of `ppl.samplers.selection`) on the
    candidates' aggregated log rewards."""

    name: str
    selection: str

    def __post_init__(self) -> None:
        if self.selection not in ANSWER_SELECTIONS:
            raise ValueError(
                f"unknown selection {self.selection!r}; choose from {sorted(ANSWER_SELECTIONS)}"
            )

    def __call__(self, rng_key: jax.Array, inputs: MethodInputs) -> list[ProblemOutcome]:
        ssm = inputs.model()
        key_run, key_select = jax.random.split(rng_key)
        result = host_smc.run(
            key_run,
            ssm,
            inputs.budget,
            ssm.num_steps,
            ess_threshold=0.0,  # never resample: N independent generations
            progress=inputs.progress,
        )
        particles = result.state.particles
        scores = np.asarray(particles.log_value, np.float64).reshape(ssm.num_groups, -1)
        texts = _by_group(ssm, particles)
        spent = particles.spent
        return _outcomes(
            self.name, inputs.budget, ssm, spent, texts, scores, self.selection, key_select
        )


METHODS.register("bon", "best-of-N: the answer of the highest reward")(
    IndependentSamples("bon", "argmax_weight")
)
METHODS.register("wbon", "weighted best-of-N: votes weighted by reward")(
    IndependentSamples("wbon", "weighted_vote")
)
METHODS.register("sc", "self-consistency: majority vote of N samples")(
    IndependentSamples("sc", "majority_vote")
)
METHODS.register("bom", "Best-of-Majority: the best reward among frequent answers")(
    IndependentSamples("bom", "best_of_majority")
)
