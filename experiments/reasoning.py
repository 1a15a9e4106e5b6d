"""Inference-time-scaling methods on step-level reasoning, at a common budget.

Every method gets a budget N (generations: particles, samples) per problem and returns, per
problem, the selected answer, the candidates it chose from, and what it spent (generations,
tokens, reasoning steps, verifier calls) as metered in the particles of
`ppl.models.reasoning.ssm.ReasoningSSM` (`ReasoningParticles.spent`).

    pf    particle filtering (Puri et al.): N particles over reasoning steps, reweighted by
          the verifier and resampled (`ppl.samplers.host_smc`), final answer by `selection`
    bon   best-of-N: N independent generations, the answer of the highest aggregated reward
    wbon  weighted best-of-N: N independent generations, votes weighted by reward
    sc    self-consistency: N independent generations, majority vote
    bom   Best-of-Majority: N independent generations, the best reward among frequent answers
    beam  beam search on the cumulative log potential: keep N / M beams, expand each M times
    dvts  diverse verifier tree search: N / M subtrees of width M, each keeps its best beam
    pg    particle Gibbs (Puri et al.): sweeps of conditional SMC around a kept reference
    pgpt  particle Gibbs with parallel tempering: tempered chains with reference swaps
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import numpy as np

from ppl.models.lm.language_model import LanguageModel
from ppl.models.reasoning.answers import answer_ids, extract_answer
from ppl.models.reasoning.reward_weighting import RewardWeighting
from ppl.models.reasoning.ssm import Budget, ReasoningParticles, ReasoningSSM, StepSettings
from ppl.models.reasoning.verifiers import Verifier
from ppl.samplers import beam_search, host_parallel_tempering, host_particle_gibbs, host_smc
from ppl.samplers.selection import ANSWER_SELECTIONS


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
        chosen = select(jax.random.fold_in(rng_key, problem), ids, scores[problem])
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
    ssm: ReasoningSSM, results: Sequence[host_smc.HostSMCResult], chains: int = 1
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


def _by_group(ssm: ReasoningSSM, particles: ReasoningParticles) -> list[list[str]]:
    texts = ssm.texts(particles)
    size = len(texts) // ssm.num_groups
    return [texts[g * size : (g + 1) * size] for g in range(ssm.num_groups)]


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
        key_run, ssm, num_particles, ssm.num_steps, resampling, threshold, progress=progress
    )
    particles = result.state.particles
    texts = _by_group(ssm, particles)
    return _outcomes(
        "pf",
        num_particles,
        ssm,
        particles.spent,
        texts,
        result.log_weights,
        selection,
        key_select,
        [result],
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
        num_samples,
        ssm.num_steps,
        ess_threshold=0.0,  # never resample: N independent generations
        progress=progress,
    )
    particles = result.state.particles
    scores = np.asarray(particles.log_value, np.float64).reshape(ssm.num_groups, -1)
    texts = _by_group(ssm, particles)
    return _outcomes(
        method, num_samples, ssm, particles.spent, texts, scores, selection[method], key_select
    )


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
        num_beams,
        ssm.num_steps,
        math.gcd(num_beams, expansions),
        diverse=method == "dvts",
        progress=progress,
    )
    scores = result.scores.reshape(ssm.num_groups, -1)
    texts = _by_group(ssm, result.particles)
    spent = result.particles.spent
    return _outcomes(method, num_beams, ssm, spent, texts, scores, "argmax_weight", key_select)


def particle_gibbs(
    rng_key: jax.Array,
    lm: LanguageModel,
    prompts: Sequence[str],
    verifier: Verifier,
    budget: int,
    weighting: RewardWeighting | None = None,
    settings: StepSettings | None = None,
    num_sweeps: int = 2,
    selection: str = "weighted_vote",
    progress: bool = False,
) -> list[ProblemOutcome]:
    """Particle Gibbs over reasoning steps: `num_sweeps` sweeps of N / `num_sweeps` particles
    (a particle filter, then conditional SMC around a reference drawn from the previous
    sweep), so that the budget N counts every particle slot of every sweep (the replayed
    reference included; its tokens are not counted as generated). With N not divisible by
    `num_sweeps` or fewer than 2 particles per sweep it runs one sweep (a particle filter).
    The answer is selected from the final particles of all sweeps, each sweep's normalized
    weights divided by the number of sweeps."""
    sweeps = num_sweeps if budget % num_sweeps == 0 and budget // num_sweeps >= 2 else 1
    per_sweep = budget // sweeps
    ssm = ReasoningSSM(lm, prompts, verifier, weighting, settings)
    key_run, key_select = jax.random.split(rng_key)
    results = host_particle_gibbs.run(
        key_run, ssm, per_sweep, ssm.num_steps, sweeps, progress=progress
    ).sweeps
    texts, scores = _pool_sweeps(ssm, results)
    spent = _total_spent(results)
    return _outcomes("pg", budget, ssm, spent, texts, scores, selection, key_select, results)


def particle_gibbs_tempering(
    rng_key: jax.Array,
    lm: LanguageModel,
    prompts: Sequence[str],
    verifier: Verifier,
    budget: int,
    weighting: RewardWeighting | None = None,
    settings: StepSettings | None = None,
    inverse_temperatures: Sequence[float] = (1.0, 0.5),
    num_sweeps: int = 2,
    selection: str = "weighted_vote",
    progress: bool = False,
) -> list[ProblemOutcome]:
    """Particle Gibbs with parallel tempering: per problem, K = len(inverse_temperatures)
    chains with tempered verifier potentials, `num_sweeps` sweeps of P particles each and
    reference swaps between neighbouring temperatures; the budget N = K x sweeps x P counts
    every particle slot of every chain. The answer is selected from the beta = 1 chain's final
    particles of all sweeps. With N < 2 K x sweeps it runs particle Gibbs (`particle_gibbs`)."""
    levels = len(inverse_temperatures)
    per_sweep = budget // (levels * num_sweeps)
    if budget % (levels * num_sweeps) or per_sweep < 2:
        outcomes = particle_gibbs(
            rng_key, lm, prompts, verifier, budget, weighting, settings, num_sweeps, selection
        )
        return [dataclasses.replace(o, method="pgpt") for o in outcomes]
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
        "pgpt", budget, ssm, spent, texts, scores, selection, key_select, result.sweeps, levels
    )


Method = Callable[..., list[ProblemOutcome]]
