"""LLM decoding as a state-space model over reasoning steps (Puri et al. 2025).

    state        x_{1:t}: the prompt and the first t reasoning steps (a row of `Generations`)
    transition   x_t ~ p_LM(. | prompt, x_{1:t-1}): decode until the step delimiter
    observation  o_t = 1 with a probability given by a verifier's rewards r(x_{1:t})

`ReasoningSSM` implements `ppl.feynman_kac.HostFeynmanKac` (and its conditional and tempered
forms) for G prompts x N particles in one batch: `initial_sample(rng_key, num_particles)`
prefills every prompt once and fans it out to N rows, `transition_sample` generates one step
for every live row with the JAX runtime and scores the new steps with the verifier,
`log_potential` turns the aggregated rewards into incremental log weights with a
`ppl.models.reasoning.reward_weighting.RewardWeighting` rule. With
`proposal_correction` the target is the untempered model, and each step's weight gains log p(x_t) -
log q(x_t) for the sampling distribution q (temperature, top-k, top-p); without it the target is the
sampling distribution reweighted by the verifier, as in Puri et al.

The model object is immutable configuration. N is set by `initial_sample` alone and read
back from the particles' shapes; what a run spends, per prompt (generations started, tokens
generated, reasoning steps, verifier calls: one per live row per step), is metered in the
particles (`ReasoningParticles.spent`, [G] per group, kept through resampling so that the
spending of rows that die is not lost).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ppl.models.lm.cache import gather_cache
from ppl.models.lm.errors import ContextLengthError
from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.sampling import SamplingParams
from ppl.models.reasoning.generations import (
    FINISH_NAMES,
    Generations,
    extend_generations,
    gather_generations_in_place,
    replay_step,
    start_generations,
)
from ppl.models.reasoning.reward_weighting import RewardWeighting, aggregate, log_potentials
from ppl.models.reasoning.verifiers import Candidates, Verifier, call_verifier


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


class ReasoningParticles(NamedTuple):
    generations: Generations
    log_value: jax.Array  # [B] aggregated log reward v_t (0 before the first step)
    reward: jax.Array  # [B] the latest reward r_t (NaN before the first step)
    spent: Budget  # [G] per prompt group, since `initial_sample` (not gathered with the rows)


class ReasoningSSM:
    """G prompts x N particles of step-level generation scored by a verifier: a
    `HostTemperedFeynmanKac` (see `ppl.feynman_kac`), immutable once built."""

    def __init__(
        self,
        lm: LanguageModel,
        prompts: Sequence[str],
        verifier: Verifier,
        weighting: RewardWeighting | None = None,
        settings: StepSettings | None = None,
        proposal_correction: bool = False,
        inverse_temperatures: Sequence[float] | None = None,
        mesh: Mesh | None = None,
    ) -> None:
        """`inverse_temperatures` [G] (default 1) temper each prompt group's verifier
        potential: group g targets p(x) exp(beta_g v_T(x)), its log G_t scaled by beta_g.

        `mesh` (one axis) shards the prompts x particles batch over its devices: every array
        of the generations, the KV cache included, is split along the batch axis, and the
        compiled decode loop runs partitioned (B must be a multiple of the device count)."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("prompts must be a non-empty sequence of strings")
        betas = np.ones(len(prompts)) if inverse_temperatures is None else inverse_temperatures
        self.inverse_temperatures = np.asarray(betas, np.float64)
        if self.inverse_temperatures.shape != (len(prompts),):
            raise ValueError("inverse_temperatures needs one value per prompt")
        self.inverse_temperatures.flags.writeable = False
        self.lm = lm
        self.prompts = tuple(prompts)
        self.verifier = verifier
        self.weighting = (weighting or RewardWeighting()).validate()
        self.settings = settings or StepSettings()
        self.proposal_correction = proposal_correction
        self.mesh = mesh
        self._eos = jnp.asarray(lm.tokenizer.eos_token_ids, jnp.int32)
        self._delimiter = lm.stop_automata((self.settings.delimiter,))
        self.prompt_ids = lm.encode_prompts(self.prompts, chat=self.settings.chat)
        longest = max(map(len, self.prompt_ids))
        needed = longest + self.settings.max_tokens
        if needed > lm.config.context_length:
            raise ContextLengthError(
                f"a prompt of {longest} tokens plus {self.settings.max_steps} steps of up to "
                f"{self.settings.max_step_tokens} tokens needs {needed} positions, more than "
                f"the model's context length {lm.config.context_length}"
            )
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"a ReasoningSSM is immutable configuration: cannot set {name!r}")
        super().__setattr__(name, value)

    @property
    def num_groups(self) -> int:
        return len(self.prompts)

    @property
    def num_steps(self) -> int:
        """T: the time steps t = 0..max_steps of the model (t = 0 is the bare prompt)."""
        return self.settings.max_steps + 1

    # The HostFeynmanKac protocol ----------------------------------------------------------
    def initial_sample(self, rng_key: jax.Array, num_particles: int) -> ReasoningParticles:
        """Prefill every prompt once and fan it out to `num_particles` empty generations
        (deterministic: `rng_key` is not used)."""
        del rng_key
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        capacity = self.lm.cache_capacity(max(map(len, self.prompt_ids)), self.settings.max_tokens)
        logits, cache = self.lm.prefill(self.prompt_ids, capacity)
        rows = jnp.repeat(jnp.arange(self.num_groups), num_particles)
        generations = start_generations(
            gather_cache(cache, rows),
            logits[rows],
            self.settings.max_tokens,
            self.settings.max_steps,
        )
        batch = self.num_groups * num_particles
        spent = Budget.zeros(self.num_groups)
        spent = spent._replace(generations=spent.generations + num_particles)
        particles = ReasoningParticles(
            generations,
            jnp.zeros(batch, jnp.float32),
            jnp.full(batch, jnp.nan, jnp.float32),
            spent,
        )
        return particles if self.mesh is None else self.shard(particles)

    def conditional_initial_sample(
        self,
        rng_key: jax.Array,
        num_particles: int,
        reference_rows: np.ndarray,
        reference: Sequence[Sequence[Sequence[int]]],
    ) -> ReasoningParticles:
        """`initial_sample`: every path starts from its bare prompt, the reference's too."""
        return self.initial_sample(rng_key, num_particles)

    def initial_log_potential(self, particles: ReasoningParticles) -> np.ndarray:
        """log G_0 = 0 for every row: the verifier first scores a step."""
        return np.zeros(particles.generations.finished.shape[0], np.float32)

    def shard(self, particles: ReasoningParticles) -> ReasoningParticles:
        """Place the batch axis of every array on the devices of `mesh`."""
        if self.mesh is None:
            raise ValueError("this model has no mesh to shard over")
        (axis,) = self.mesh.axis_names
        rows = NamedSharding(self.mesh, PartitionSpec(axis))
        layers = NamedSharding(self.mesh, PartitionSpec(None, axis))  # cache: [L, B, ...]
        generations = particles.generations
        cache = generations.cache
        placed = generations._replace(
            **{
                name: jax.device_put(value, rows)
                for name, value in generations._asdict().items()
                if name != "cache"
            },
            cache=cache._replace(
                keys=jax.device_put(cache.keys, layers),
                values=jax.device_put(cache.values, layers),
                lengths=jax.device_put(cache.lengths, rows),
            ),
        )
        return ReasoningParticles(
            placed,
            jax.device_put(particles.log_value, rows),
            jax.device_put(particles.reward, rows),
            particles.spent,
        )

    def transition_sample(
        self, rng_key: jax.Array, t: int, particles: ReasoningParticles
    ) -> ReasoningParticles:
        """Generate and score the next reasoning step of every live row (the row's own step
        count is its time index, so `t` is not needed)."""
        generations = self._sample_step(rng_key, particles.generations)
        return self._score(particles, generations)

    def conditional_transition_sample(
        self,
        rng_key: jax.Array,
        t: int,
        particles: ReasoningParticles,
        reference_rows: np.ndarray,
        reference: Sequence[Sequence[Sequence[int]]],
    ) -> ReasoningParticles:
        """`transition_sample`, except that row `reference_rows[g]` replays the next step of
        the path `reference[g]` (a list of steps, each a list of token ids) instead of
        sampling."""
        previous = particles.generations
        forced = np.zeros(previous.finished.shape[0], bool)
        forced[np.asarray(reference_rows)] = True
        finished = np.asarray(previous.finished)
        num_steps = np.asarray(previous.num_steps)
        width = self.settings.max_step_tokens
        step_tokens = np.full((forced.size, width), -1, np.int32)
        for row, path in zip(np.asarray(reference_rows), reference, strict=True):
            if not finished[row] and num_steps[row] < len(path):
                step = list(path[num_steps[row]])[:width]
                step_tokens[row, : len(step)] = step
        sampled = self._sample_step(
            rng_key, previous._replace(finished=previous.finished | jnp.asarray(forced))
        )
        sampled = sampled._replace(finished=jnp.where(forced, previous.finished, sampled.finished))
        generations = replay_step(
            self.lm.params,
            self.lm.config,
            sampled,
            jnp.asarray(forced),
            jnp.asarray(step_tokens),
            max_steps=self.settings.max_steps,
            sampling=self.settings.sampling,
            eos_token_ids=self._eos,
        )
        return self._score(particles, generations, replayed=forced)

    def trace(self, particles: ReasoningParticles, rows: Sequence[int]) -> list[list[list[int]]]:
        """The reasoning steps (token ids) of `rows`, to replay with
        `conditional_transition_sample`."""
        generations = particles.generations
        tokens, ends = np.asarray(generations.tokens), np.asarray(generations.step_ends)
        counts = np.asarray(generations.num_steps)
        paths = []
        for row in rows:
            bounds = [0, *ends[row, : counts[row]].tolist()]
            paths.append([tokens[row, a:b].tolist() for a, b in itertools.pairwise(bounds)])
        return paths

    def _sample_step(self, rng_key: jax.Array, generations: Generations) -> Generations:
        return extend_generations(
            self.lm.params,
            self.lm.config,
            rng_key,
            generations,
            max_step_tokens=self.settings.max_step_tokens,
            max_steps=self.settings.max_steps,
            sampling=self.settings.sampling,
            eos_token_ids=self._eos,
            delimiter=self._delimiter,
        )

    def _score(
        self,
        particles: ReasoningParticles,
        generations: Generations,
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
        return ReasoningParticles(
            generations,
            jnp.asarray(log_value, jnp.float32),
            jnp.asarray(reward, jnp.float32),
            spent,
        )

    def log_potential(
        self, t: int, previous: ReasoningParticles, particles: ReasoningParticles
    ) -> np.ndarray:
        """beta_g times the weighting rule's increment from v_{t-1} to v_t (plus log p - log q
        of the step with `proposal_correction`); 0 for rows that were already finished."""
        moved = ~np.asarray(previous.generations.finished)
        increments = log_potentials(
            self.weighting, np.asarray(previous.log_value), np.asarray(particles.log_value), moved
        )
        betas = self.inverse_temperatures[self.groups(previous)]
        increments = betas * increments
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

    def gather(self, particles: ReasoningParticles, ancestors: jax.Array) -> ReasoningParticles:
        """Rows `ancestors` of the batch. Consumes `particles`: KV-cache rows are copied in
        place where the layout allows it (`gather_generations_in_place`)."""
        rows = np.asarray(ancestors)
        index = jnp.asarray(rows)
        return ReasoningParticles(
            gather_generations_in_place(particles.generations, rows),
            particles.log_value[index],
            particles.reward[index],
            particles.spent,
        )

    # Views ---------------------------------------------------------------------------------
    def groups(self, particles: ReasoningParticles | Generations) -> np.ndarray:
        """[B] the prompt index of every row (N = B / G, read from the particles' shape)."""
        num_rows = _generations(particles).finished.shape[0]
        return np.repeat(np.arange(self.num_groups), num_rows // self.num_groups)

    def token_ids(self, generations: Generations, rows: Sequence[int] | None = None) -> list:
        tokens, counts = np.asarray(generations.tokens), np.asarray(generations.num_tokens)
        rows = range(len(counts)) if rows is None else rows
        return [tokens[b, : counts[b]].tolist() for b in rows]

    def texts(self, particles: ReasoningParticles | Generations) -> list[str]:
        """The generated text of every row (special tokens dropped)."""
        generations = _generations(particles)
        decode = self.lm.tokenizer.decode
        return [decode(ids, skip_special_tokens=True) for ids in self.token_ids(generations)]

    def finish_reasons(self, particles: ReasoningParticles | Generations) -> list[str]:
        reasons = np.asarray(_generations(particles).finish_reason)
        return [FINISH_NAMES[int(r)] for r in reasons]

    def candidates(self, generations: Generations, rows: np.ndarray) -> Candidates:
        tokens, counts = np.asarray(generations.tokens), np.asarray(generations.num_tokens)
        starts = np.asarray(generations.step_start)
        decode = self.lm.tokenizer.decode
        groups = self.groups(generations)[rows]
        return Candidates(
            prompts=[self.prompts[g] for g in groups],
            texts=[decode(tokens[b, : counts[b]].tolist(), skip_special_tokens=True) for b in rows],
            last_steps=[
                decode(tokens[b, starts[b] : counts[b]].tolist(), skip_special_tokens=True)
                for b in rows
            ],
            finished=np.asarray(generations.finished)[rows],
            groups=groups,
            rows=np.asarray(rows),
            generations=generations,
        )


def _generations(particles: ReasoningParticles | Generations) -> Generations:
    return particles.generations if isinstance(particles, ReasoningParticles) else particles
