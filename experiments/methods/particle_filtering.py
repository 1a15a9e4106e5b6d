"""Particle filtering over reasoning steps (Puri et al.): `pf`."""

from __future__ import annotations

import dataclasses

import jax

from ppl.experiments.methods import METHODS
from ppl.experiments.reasoning import MethodInputs, ProblemOutcome, _by_group, _outcomes
from ppl.samplers import host_smc


@dataclasses.dataclass(frozen=True)
class ParticleFiltering:
    """Particle filtering over reasoning steps for every prompt at once (prompts x particles
    in one batch), N = `inputs.budget` particles per prompt, reweighted by the verifier and
    resampled when the ESS falls below `ess_threshold` x N; the answer by `selection`. The
    softmax rule resamples at every step whatever `ess_threshold` says."""

    name: str = "pf"
    resampling: str = "systematic"
    ess_threshold: float = 0.5
    selection: str = "weighted_vote"

    def __call__(self, rng_key: jax.Array, inputs: MethodInputs) -> list[ProblemOutcome]:
        ssm = inputs.model()
        key_run, key_select = jax.random.split(rng_key)
        threshold = 1.0 if inputs.weighting.resample_every_step else self.ess_threshold
        result = host_smc.run(
            key_run,
            ssm,
            inputs.budget,
            ssm.num_steps,
            self.resampling,
            threshold,
            progress=inputs.progress,
        )
        particles = result.state.particles
        texts = _by_group(ssm, particles)
        return _outcomes(
            self.name,
            inputs.budget,
            ssm,
            particles.spent,
            texts,
            result.log_weights,
            self.selection,
            key_select,
            [result],
        )


METHODS.register("pf", "particle filtering: N particles reweighted and resampled by the verifier")(
    ParticleFiltering()
)
