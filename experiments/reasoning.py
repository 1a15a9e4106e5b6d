"""What every inference-time-scaling method on step-level reasoning shares.

A method (one file under `ppl.experiments.methods`, registered in `METHODS` there) is a
callable `method(rng_key, inputs) -> list[ProblemOutcome]`: it gets a budget N (generations:
particles, samples) per problem in a frozen `MethodInputs` and returns, per problem, the
selected answer, the candidates it chose from, and what it spent (generations, tokens,
reasoning steps, verifier calls) as metered in the particles of
`ppl.models.reasoning.ssm.ReasoningSSM` (`ReasoningParticles.spent`).
`_outcomes` turns candidates and scores into those outcomes; `ppl scale --help` lists the
registered methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import jax
import numpy as np

from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.served import ServedModel
from ppl.models.reasoning.answers import answer_ids, extract_answer
from ppl.models.reasoning.reward_weighting import RewardWeighting
from ppl.models.reasoning.step_model import (
    Budget,
    ReasoningParticles,
    StepModel,
    StepSettings,
    reasoning_model,
)
from ppl.models.reasoning.verifiers import Verifier
from ppl.registry import import_modules
from ppl.samplers import host_smc
from ppl.samplers.selection import ANSWER_SELECTIONS

import_modules("ppl.models.reasoning")  # every backend module registers its model


@dataclasses.dataclass(frozen=True)
class MethodInputs:
    """What every method gets, passed whole: the generator (in-process or served), the
    problems' prompts (one batch), the verifier, the budget N per problem, how rewards become
    weights, the step settings (`None`: `StepSettings()`), and the problems' ids (`None`:
    0..P-1). Every draw of problem p comes from `fold_in(rng_key, id_p)`
    (`ppl.feynman_kac.group_keys`), so a problem's outcome does not depend on which problems
    share its batch."""

    lm: LanguageModel | ServedModel
    prompts: Sequence[str]
    verifier: Verifier
    budget: int
    weighting: RewardWeighting = dataclasses.field(default_factory=RewardWeighting)
    settings: StepSettings | None = None
    progress: bool = False
    problem_ids: Sequence[int] | None = None

    def __post_init__(self) -> None:
        ids = self.problem_ids
        if ids is not None and (len(ids) != len(self.prompts) or len(set(ids)) != len(ids)):
            raise ValueError(
                f"problem_ids must be {len(self.prompts)} distinct ints, one per prompt, "
                f"got {list(ids)}"
            )

    def model(
        self, chains: int = 1, inverse_temperatures: Sequence[float] | None = None
    ) -> StepModel:
        """The reasoning state-space model over the prompts, each repeated `chains` times in a
        row (tempered chains, with their `inverse_temperatures`), on the backend that takes
        `lm` (`ppl.models.reasoning.step_model.BACKENDS`). Chain c of problem p is the group
        with id `id_p * chains + c`."""
        prompts = [p for p in self.prompts for _ in range(chains)]
        ids = range(len(self.prompts)) if self.problem_ids is None else self.problem_ids
        group_ids = [int(i) * chains + c for i in ids for c in range(chains)]
        return reasoning_model(
            self.lm,
            prompts,
            self.verifier,
            self.weighting,
            self.settings,
            inverse_temperatures=inverse_temperatures,
            group_ids=group_ids,
        )


class Method(Protocol):
    """A reasoning method: `method(rng_key, inputs)` -> one outcome per prompt, in order."""

    def __call__(self, rng_key: jax.Array, inputs: MethodInputs) -> list[ProblemOutcome]: ...


@dataclasses.dataclass
class ProblemOutcome:
    """What one method did on one problem at one budget."""

    method: str
    budget: int
    problem: int  # index into the batch of prompts
    answer: str | None  # the selected answer (normalized), None if no candidate answered
    candidates: list[str | None]  # each final candidate's answer
    texts: list[str]  # each final candidate's generated text
    scores: list[float]  # each candidate's score (log weight or log reward) for selection
    spent: dict[str, int]  # generations, tokens, steps, verifier_calls
    all_dead: bool = False  # every particle got weight zero at some step
    num_nan: int = 0  # NaN rewards met (counted as zero weight)
    log_evidence: float | None = None  # particle filtering's log Z_hat


def _outcomes(
    method: str,
    budget: int,
    ssm: StepModel,
    spent: Budget,
    texts: Sequence[Sequence[str]],
    scores: np.ndarray,
    selection: str,
    rng_key: jax.Array,
    results: Sequence[host_smc.HostSMCResult] = (),
    chains: int = 1,
) -> list[ProblemOutcome]:
    """Select an answer per problem from its candidates `texts[p]` with `scores` [P, K].

    Problem p owns the `chains` consecutive groups from p * chains (tempered chains); its
    budget is summed over them, its diagnostics are those of its first (target) group.
    """
    select = ANSWER_SELECTIONS[selection]
    outcomes = []
    for problem in range(ssm.num_groups // chains):
        target = problem * chains
        owned = slice(target, target + chains)
        answers = [extract_answer(t) for t in texts[problem]]
        ids, names = answer_ids(answers)
        problem_key = jax.random.fold_in(rng_key, ssm.group_ids[target] // chains)
        chosen = select(problem_key, ids, scores[problem])
        outcomes.append(
            ProblemOutcome(
                method=method,
                budget=budget,
                problem=problem,
                answer=names[chosen] if chosen >= 0 else None,
                candidates=answers,
                texts=list(texts[problem]),
                scores=[float(s) for s in scores[problem]],
                spent={name: int(value[owned].sum()) for name, value in spent._asdict().items()},
                all_dead=any(bool(r.all_dead[target]) for r in results),
                num_nan=sum(int(info.num_nan[owned].sum()) for r in results for info in r.infos),
                log_evidence=float(results[0].log_evidence[target]) if results else None,
            )
        )
    return outcomes


def _pool_sweeps(
    ssm: StepModel, results: Sequence[host_smc.HostSMCResult], chains: int = 1
) -> tuple[list[list[str]], np.ndarray]:
    """Every sweep's final particles of each problem's target group (the first of its
    `chains`), with each sweep's normalized log weights minus log(number of sweeps)."""
    problems = ssm.num_groups // chains
    texts: list[list[str]] = [[] for _ in range(problems)]
    scores: list[list[float]] = [[] for _ in range(problems)]
    for result in results:
        for g, group_texts in enumerate(_by_group(ssm, result.state.particles)):
            if g % chains == 0:
                texts[g // chains] += group_texts
                scores[g // chains] += list(result.log_weights[g] - np.log(len(results)))
    return texts, np.asarray(scores)


def _total_spent(results: Sequence[host_smc.HostSMCResult]) -> Budget:
    """What every sweep spent, summed (each sweep meters its own particles)."""
    spent = results[0].state.particles.spent
    for result in results[1:]:
        spent = spent.plus(result.state.particles.spent)
    return spent


def _by_group(ssm: StepModel, particles: ReasoningParticles) -> list[list[str]]:
    texts = ssm.texts(particles)
    size = len(texts) // ssm.num_groups
    return [texts[g * size : (g + 1) * size] for g in range(ssm.num_groups)]
