"""Inference-time-scaling methods on step-level reasoning, at a common budget.

Every method gets a budget N (generations: particles, samples) per problem and returns, per
problem, the selected answer, the candidates it chose from, and what it spent (generations,
tokens, reasoning steps, verifier calls) as metered by `models.reasoning.ssm.ReasoningSSM`.

    pf    particle filtering (Puri et al.): N particles over reasoning steps, reweighted by
          the verifier and resampled (`samplers.host_smc`), final answer by `selection`
    bon   best-of-N: N independent generations, the answer of the highest aggregated reward
    wbon  weighted best-of-N: N independent generations, votes weighted by reward
    sc    self-consistency: N independent generations, majority vote
    bom   Best-of-Majority: N independent generations, the best reward among frequent answers
    beam  beam search on the cumulative log potential: keep N / M beams, expand each M times
    dvts  diverse verifier tree search: N / M subtrees of width M, each keeps its best beam
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import numpy as np

from models.lm.language_model import LanguageModel
from models.reasoning.answers import answer_ids, extract_answer
from models.reasoning.ssm import ReasoningParticles, ReasoningSSM, StepSettings
from models.reasoning.verifiers import Verifier
from ppl.reward_weighting import RewardWeighting
from samplers import beam_search, host_smc
from samplers.selection import ANSWER_SELECTIONS


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
    ssm: ReasoningSSM,
    particles: ReasoningParticles,
    scores: np.ndarray,
    selection: str,
    rng_key: jax.Array,
    result: host_smc.HostSMCResult | None = None,
) -> list[ProblemOutcome]:
    texts = ssm.texts(particles)
    answers = [extract_answer(t) for t in texts]
    select = ANSWER_SELECTIONS[selection]
    outcomes = []
    for g in range(ssm.num_groups):
        rows = slice(g * budget, (g + 1) * budget)
        ids, names = answer_ids(answers[rows])
        chosen = select(jax.random.fold_in(rng_key, g), ids, scores[rows])
        nan = sum(int(info.num_nan[g]) for info in result.infos) if result else 0
        outcomes.append(
            ProblemOutcome(
                method=method,
                budget=budget,
                problem=g,
                answer=names[chosen] if chosen >= 0 else None,
                candidates=answers[rows],
                texts=texts[rows],
                scores=[float(s) for s in scores[rows]],
                spent={
                    "generations": int(ssm.spent.generations[g]),
                    "tokens": int(ssm.spent.tokens[g]),
                    "steps": int(ssm.spent.steps[g]),
                    "verifier_calls": int(ssm.spent.verifier_calls[g]),
                },
                all_dead=bool(result.all_dead[g]) if result else False,
                num_nan=nan,
                log_evidence=float(result.log_evidence[g]) if result else None,
            )
        )
    return outcomes


def particle_filtering(
    rng_key: jax.Array,
    lm: LanguageModel,
    prompts: Sequence[str],
    verifier: Verifier,
    num_particles: int,
    weighting: RewardWeighting | None = None,
    settings: StepSettings | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    selection: str = "weighted_vote",
    progress: bool = False,
) -> list[ProblemOutcome]:
    """Particle filtering over reasoning steps for every prompt at once (prompts x particles
    in one batch). The softmax rule resamples at every step whatever `ess_threshold` says."""
    weighting = weighting or RewardWeighting()
    ssm = ReasoningSSM(lm, prompts, verifier, weighting, settings)
    key_run, key_select = jax.random.split(rng_key)
    threshold = 1.0 if weighting.resample_every_step else ess_threshold
    result = host_smc.run(
        key_run,
        ssm,
        ssm.start(num_particles),
        ssm.settings.max_steps,
        resampling,
        threshold,
        progress=progress,
    )
    scores = result.log_weights.reshape(-1)
    return _outcomes(
        "pf", num_particles, ssm, result.state.particles, scores, selection, key_select, result
    )


def independent_samples(
    method: str,
    rng_key: jax.Array,
    lm: LanguageModel,
    prompts: Sequence[str],
    verifier: Verifier,
    num_samples: int,
    weighting: RewardWeighting | None = None,
    settings: StepSettings | None = None,
    progress: bool = False,
) -> list[ProblemOutcome]:
    """Best-of-N (`bon`), weighted best-of-N (`wbon`), self-consistency (`sc`) or
    Best-of-Majority (`bom`) on N independent generations per prompt, scored by the
    verifier's aggregated reward."""
    selection = {
        "bon": "argmax_weight",
        "wbon": "weighted_vote",
        "sc": "majority_vote",
        "bom": "best_of_majority",
    }
    if method not in selection:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(selection)}")
    ssm = ReasoningSSM(lm, prompts, verifier, weighting, settings)
    key_run, key_select = jax.random.split(rng_key)
    result = host_smc.run(
        key_run,
        ssm,
        ssm.start(num_samples),
        ssm.settings.max_steps,
        ess_threshold=0.0,  # never resample: N independent generations
        progress=progress,
    )
    particles = result.state.particles
    scores = np.asarray(particles.log_value, np.float64)  # the aggregated log reward
    return _outcomes(method, num_samples, ssm, particles, scores, selection[method], key_select)


def tree_search(
    method: str,
    rng_key: jax.Array,
    lm: LanguageModel,
    prompts: Sequence[str],
    verifier: Verifier,
    num_beams: int,
    weighting: RewardWeighting | None = None,
    settings: StepSettings | None = None,
    expansions: int = 4,
    progress: bool = False,
) -> list[ProblemOutcome]:
    """Beam search (`beam`) or DVTS (`dvts`) with N = `num_beams` rows per prompt and M =
    gcd(N, `expansions`) expansions per kept beam; the answer of the best final beam."""
    if method not in ("beam", "dvts"):
        raise ValueError(f"unknown method {method!r}; choose from ['beam', 'dvts']")
    weighting = weighting or RewardWeighting()
    if weighting.rule != "bernoulli":
        raise ValueError("tree search ranks by cumulative log potentials: use the bernoulli rule")
    ssm = ReasoningSSM(lm, prompts, verifier, weighting, settings)
    key_run, key_select = jax.random.split(rng_key)
    result = beam_search.run(
        key_run,
        ssm,
        ssm.start(num_beams),
        ssm.settings.max_steps,
        math.gcd(num_beams, expansions),
        diverse=method == "dvts",
        progress=progress,
    )
    return _outcomes(
        method, num_beams, ssm, result.particles, result.scores, "argmax_weight", key_select
    )


Method = Callable[..., list[ProblemOutcome]]
