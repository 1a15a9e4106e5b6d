"""Tree search on the cumulative log potential: beam search (`beam`) and diverse verifier
tree search (`dvts`)."""

from __future__ import annotations

import dataclasses
import math

import jax

from ppl.experiments.methods import METHODS
from ppl.experiments.reasoning import MethodInputs, ProblemOutcome, _by_group, _outcomes
from ppl.samplers import beam_search


@dataclasses.dataclass(frozen=True)
class TreeSearch:
    """Beam search, or DVTS with `diverse`, with N = `inputs.budget` rows per prompt and M =
    gcd(N, `expansions`) expansions per kept beam; the answer of the best final beam. Needs
    the bernoulli weighting rule (it ranks by cumulative log potentials)."""

    name: str
    diverse: bool = False
    expansions: int = 4

    def __call__(self, rng_key: jax.Array, inputs: MethodInputs) -> list[ProblemOutcome]:
        num_beams = inputs.budget
        if inputs.weighting.rule != "bernoulli":
            raise ValueError(
                "tree search ranks by cumulative log potentials: use the bernoulli rule"
            )
        ssm = inputs.model()
        key_run, key_select = jax.random.split(rng_key)
        result = beam_search.run(
            key_run,
            ssm,
            num_beams,
            ssm.num_steps,
            math.gcd(num_beams, self.expansions),
            diverse=self.diverse,
            progress=inputs.progress,
        )
        scores = result.scores.reshape(ssm.num_groups, -1)
        texts = _by_group(ssm, result.particles)
        spent = result.particles.spent
        return _outcomes(
            self.name, num_beams, ssm, spent, texts, scores, "argmax_weight", key_select
        )


METHODS.register("beam", "beam search: keep N / M beams, expand each M times")(TreeSearch("beam"))
METHODS.register("dvts", "diverse verifier tree search: N / M subtrees, each keeps its best")(
    TreeSearch("dvts", diverse=True)
)
