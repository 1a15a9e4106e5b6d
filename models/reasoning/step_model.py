"""What every backend of the reasoning state-space model shares (Puri et al. 2025).

    state        x_{1:t}: the prompt and the first t reasoning steps
    transition   x_t ~ p_LM(. | prompt, x_{1:t-1}): decode until the step delimiter
    observation  o_t = 1 with a probability given by a verifier's rewards r(x_{1:t})

`StepModel` is a `ppl.feynman_kac.HostTemperedFeynmanKac` over G prompts x N particles
whose next step comes from a backend: `ppl.models.reasoning.ssm.ReasoningSSM` decodes with
the in-process JAX runtime (the particles hold its KV cache),
`ppl.models.reasoning.served_ssm.ServedReasoningSSM` asks an OpenAI-compatible server (the
particles hold texts). A backend implements `initial_sample`, `transition_sample`,
`conditional_transition_sample`, `trace`, `gather`, `texts` and `candidates`; metering,
scoring and weighting are here, the same for every backend.

Weights. `log_potential` turns the aggregated rewards into incremental log weights with a
`RewardWeighting` rule, times the prompt group's inverse temperature beta_g. With
`proposal_correction` the target is the untempered model, and each step's weight gains
log p(x_t) - log q(x_t) for the sampling distribution q (temperature, top-k, top-p);
without it the target is the sampling distribution reweighted by the verifier.

Budget. What a run spends, per prompt (generations started, tokens generated, reasoning
steps, verifier calls: one per live row per step), is metered in the particles
(`ReasoningParticles.spent`, [G] per group, kept through resampling so that the spending of
rows that die is not lost).

`BACKENDS` names the backends; `reasoning_model(generator, ...)` builds the one whose
generator type matches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

import jax
import numpy as np

from ppl.models.lm.sampling import SamplingParams
from ppl.models.reasoning.generations import FINISH_NAMES
from ppl.models.reasoning.reward_weighting import RewardWeighting, aggregate, log_potentials
from ppl.models.reasoning.verifiers import Candidates, Verifier, call_verifier
from ppl.registry import Registry


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """How a reasoning step is generated."""

    delimiter: str = "\n\n"
    max_step_tokens: int = 64
    max_steps: int = 8
    sampling: SamplingParams = dataclasses.field(
        default_factory=lambda: SamplingParams(temperature=0.8)
    )
    chat: bool = False  # wrap each prompt in the model's chat template

    def __post_init__(self) -> None:
        if self.max_step_tokens < 1 or self.max_steps < 1:
            raise ValueError("max_step_tokens and max_steps must be >= 1")
        if not self.delimiter:
            raise ValueError("the step delimiter must be a non-empty string")

    @property
    def max_tokens(self) -> int:
        return self.max_step_tokens * self.max_steps


class Budget(NamedTuple):
    """What a method spent, per prompt ([G] integer arrays)."""

    generations: np.ndarray
    tokens: np.ndarray
    steps: np.ndarray
    verifier_calls: np.ndarray

    @classmethod
    def zeros(cls, num_groups: int) -> Budget:
        return cls(*(np.zeros(num_groups, np.int64) for _ in range(4)))

    def plus(self, other: Budget) -> Budget:
        """The sum of two budgets (e.g. of two sweeps)."""
        return Budget(*(a + b for a, b in zip(self, other, strict=True)))


class StepState(Protocol):
    """The per-row arrays every backend's generations carry ([B] each)."""

    @property
    def num_tokens(self) -> Any: ...
    @property
    def num_steps(self) -> Any: ...
    @property
    def finished(self) -> Any: ...
    @property
    def finish_reason(self) -> Any: ...
    @property
    def step_model_logprob(self) -> Any: ...
    @property
    def step_sampling_logprob(self) -> Any: ...


class ReasoningParticles(NamedTuple):
    generations: Any  # the backend's generations (a `StepState`)
    log_value: Any  # [B] aggregated log reward v_t (0 before the first step)
    reward: Any  # [B] the latest reward r_t (NaN before the first step)
    spent: Budget  # [G] per prompt group, since `initial_sample` (not gathered with the rows)


class StepModel:
    """G prompts x N particles of step-level generation scored by a verifier, immutable once
    built; subclasses are the backends (module docstring)."""

    generator_type: ClassVar[type]  # what `reasoning_model` matches a generator against

    def __init__(
        self,
        prompts: Sequence[str],
        verifier: Verifier,
        weighting: RewardWeighting | None = None,
        settings: StepSettings | None = None,
        proposal_correction: bool = False,
        inverse_temperatures: Sequence[float] | None = None,
        group_ids: Sequence[int] | None = None,
    ) -> None:
        """`inverse_temperatures` [G] (default 1) temper each prompt group's verifier
        potential: group g targets p(x) exp(beta_g v_T(x)), its log G_t scaled by beta_g.
        `group_ids` [G] (default 0..G-1), distinct non-negative ints, name the groups for
        their random keys (`ppl.feynman_kac.group_keys`): a group's draws depend only on the
        run's key and its id, so a problem's result does not depend on its batch."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("prompts must be a non-empty sequence of strings")
        ids = tuple(range(len(prompts))) if group_ids is None else tuple(map(int, group_ids))
        if len(ids) != len(prompts) or len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(
                f"group_ids must be {len(prompts)} distinct non-negative ints, got {ids}"
            )
        self.group_ids = ids
        betas = np.ones(len(prompts)) if inverse_temperatures is None else inverse_temperatures
        self.inverse_temperatures = np.asarray(betas, np.float64)
        if self.inverse_temperatures.shape != (len(prompts),):
            raise ValueError("inverse_temperatures needs one value per prompt")
        self.inverse_temperatures.flags.writeable = False
        self.prompts = tuple(prompts)
        self.verifier = verifier
        self.weighting = (weighting or RewardWeighting()).validate()
        self.settings = settings or StepSettings()
        self.proposal_correction = proposal_correction

    def freeze(self) -> None:
        """Called at the end of a subclass's `__init__`: no attribute changes afterwards."""
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"a {type(self).__name__} is immutable configuration: cannot set {name!r}"
            )
        super().__setattr__(name, value)

    @property
    def num_groups(self) -> int:
        return len(self.prompts)

    @property
    def num_steps(self) -> int:
        """T: the time steps t = 0..max_steps of the model (t = 0 is the bare prompt)."""
        return self.settings.max_steps + 1

    # The HostFeynmanKac protocol (the backend supplies the sampling) --------------------
    def conditional_initial_sample(
        self,
        rng_key: jax.Array,
        num_particles: int,
        reference_rows: np.ndarray,
        reference: Sequence[Sequence[Any]],
    ) -> ReasoningParticles:
        """`initial_sample`: every path starts from its bare prompt, the reference's too."""
        return self.initial_sample(rng_key, num_particles)

    def initial_sample(self, rng_key: jax.Array, num_particles: int) -> ReasoningParticles:
        raise NotImplementedError

    def started(self, num_particles: int) -> Budget:
        """The budget of `initial_sample`: `num_particles` (>= 1) generations per prompt."""
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        spent = Budget.zeros(self.num_groups)
        return spent._replace(generations=spent.generations + num_particles)

    def transition_sample(
        self, rng_key: jax.Array, t: int, particles: ReasoningParticles
    ) -> ReasoningParticles:
        raise NotImplementedError

    def conditional_transition_sample(
        self,
        rng_key: jax.Array,
        t: int,
        particles: ReasoningParticles,
        reference_rows: np.ndarray,
        reference: Sequence[Sequence[Any]],
    ) -> ReasoningParticles:
        raise NotImplementedError

    def trace(self, particles: ReasoningParticles, rows: Sequence[int]) -> list[list[Any]]:
        """The steps of `rows`, in the form `conditional_transition_sample` replays."""
        raise NotImplementedError

    def gather(self, particles: ReasoningParticles, ancestors: jax.Array) -> ReasoningParticles:
        raise NotImplementedError

    def initial_log_potential(self, particles: ReasoningParticles) -> np.ndarray:
        """log G_0 = 0 for every row: the verifier first scores a step."""
        return np.zeros(np.asarray(particles.generations.finished).shape[0], np.float32)

    def log_potential(
        self, t: int, previous: ReasoningParticles, particles: ReasoningParticles
    ) -> np.ndarray:
        """beta_g times the weighting rule's increment from v_{t-1} to v_t (plus log p - log q
        of the step with `proposal_correction`); 0 for rows that were already finished."""
        moved = ~np.asarray(previous.generations.finished)
        increments = log_potentials(
            self.weighting, np.asarray(previous.log_value), np.asarray(particles.log_value), moved
        )
        increments = self.inverse_temperatures[self.groups(previous)] * increments
        if self.proposal_correction:
            generations = particles.generations
            ratio = np.asarray(generations.step_model_logprob) - np.asarray(
                generations.step_sampling_logprob
            )
            increments = increments + np.where(moved, ratio, 0.0)
        return increments

    def path_log_potential(self, particles: ReasoningParticles, rows: Sequence[int]) -> np.ndarray:
        """V(x) = v_T(x), the untempered aggregated log reward of the paths in `rows` (the sum
        of their Bernoulli log potentials), for tempering swaps."""
        return np.asarray(particles.log_value, np.float64)[np.asarray(rows)]

    def finished(self, particles: ReasoningParticles) -> np.ndarray:
        return np.asarray(particles.generations.finished)

    # Views -----------------------------------------------------------------------------
    def groups(self, particles: ReasoningParticles | StepState) -> np.ndarray:
        """[B] the prompt index of every row (N = B / G, read from the particles' shape)."""
        num_rows = np.asarray(generations_of(particles).finished).shape[0]
        return np.repeat(np.arange(self.num_groups), num_rows // self.num_groups)

    def finish_reasons(self, particles: ReasoningParticles | StepState) -> list[str]:
        reasons = np.asarray(generations_of(particles).finish_reason)
        return [FINISH_NAMES[int(r)] for r in reasons]

    def texts(self, particles: Any) -> list[str]:
        """The generated text of every row."""
        raise NotImplementedError

    def candidates(self, generations: Any, rows: np.ndarray) -> Candidates:
        """Rows `rows` of `generations`, for the verifier."""
        raise NotImplementedError

    # Scoring ---------------------------------------------------------------------------
    def score(
        self,
        particles: ReasoningParticles,
        generations: StepState,
        replayed: np.ndarray | None = None,
    ) -> ReasoningParticles:
        """Meter the step, call the verifier on the rows that moved and aggregate rewards.
        Tokens of `replayed` rows are not counted as generated."""
        previous = particles.generations
        moved = ~np.asarray(previous.finished)
        rows = np.flatnonzero(moved)
        groups = self.groups(previous)
        new_tokens = np.asarray(generations.num_tokens) - np.asarray(previous.num_tokens)
        if replayed is not None:
            new_tokens = np.where(replayed, 0, new_tokens)
        spent = particles.spent
        tokens, steps = spent.tokens.copy(), spent.steps.copy()
        verifier_calls = spent.verifier_calls.copy()
        np.add.at(tokens, groups, new_tokens)
        np.add.at(steps, groups[rows], 1)
        np.add.at(verifier_calls, groups[rows], 1)
        spent = Budget(spent.generations, tokens, steps, verifier_calls)
        rewards = np.full(moved.shape, np.nan)
        if rows.size:
            rewards[rows] = call_verifier(self.verifier, self.candidates(generations, rows))
        log_value = np.asarray(particles.log_value, np.float64)
        updated = aggregate(
            log_value, rewards, np.asarray(generations.num_steps), self.weighting.aggregation
        )
        log_value = np.where(moved, updated, log_value)
        reward = np.where(moved, rewards, np.asarray(particles.reward))
        return self.particles(generations, log_value, reward, spent)

    def particles(
        self, generations: Any, log_value: np.ndarray, reward: np.ndarray, spent: Budget
    ) -> ReasoningParticles:
        """The backend's particles from host arrays (a backend may place them on devices)."""
        return ReasoningParticles(
            generations, log_value.astype(np.float32), reward.astype(np.float32), spent
        )


def generations_of(particles: ReasoningParticles | StepState) -> Any:
    """The generations of `particles`, or `particles` when they are generations already."""
    return particles.generations if isinstance(particles, ReasoningParticles) else particles


BACKENDS: Registry[type[StepModel]] = Registry("backend")


def reasoning_model(
    generator: object,
    prompts: Sequence[str],
    verifier: Verifier,
    weighting: RewardWeighting | None = None,
    settings: StepSettings | None = None,
    inverse_temperatures: Sequence[float] | None = None,
    group_ids: Sequence[int] | None = None,
) -> StepModel:
    """The registered backend's model for `generator` (a `LanguageModel`, a `ServedModel`)."""
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)
        if isinstance(generator, backend.generator_type):
            build: Callable[..., StepModel] = backend  # the subclass takes the generator first
            return build(
                generator,
                prompts,
                verifier,
                weighting,
                settings,
                inverse_temperatures=inverse_temperatures,
                group_ids=group_ids,
            )
    raise TypeError(
        f"no reasoning backend takes a {type(generator).__name__}; the backends are "
        + ", ".join(f"{n} ({BACKENDS.get(n).generator_type.__name__})" for n in BACKENDS.names())
    )
