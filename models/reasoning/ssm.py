"""The reasoning state-space model over the in-process JAX runtime (Puri et al. 2025).

`ReasoningSSM` is the `ppl.models.reasoning.step_model.StepModel` backend whose particles
hold a row of `Generations` each, KV cache included: `initial_sample(rng_key, num_particles)`
prefills every prompt once and fans it out to N rows, `transition_sample` generates one step
for every live row in one compiled decode loop, and the shared `StepModel.score` meters the
step and scores it with the verifier (`ppl.models.reasoning.step_model` has the weights and
the budget).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ppl.feynman_kac import row_keys
from ppl.models.lm.cache import gather_cache
from ppl.models.lm.errors import ContextLengthError
from ppl.models.lm.language_model import LanguageModel
from ppl.models.reasoning.generations import (
    Generations,
    extend_generations,
    gather_generations_in_place,
    replay_step,
    start_generations,
)
from ppl.models.reasoning.reward_weighting import RewardWeighting
from ppl.models.reasoning.step_model import (
    BACKENDS,
    Budget,
    ReasoningParticles,
    StepModel,
    StepSettings,
    generations_of,
)
from ppl.models.reasoning.verifiers import Candidates, Verifier


@BACKENDS.register("jax", "the in-process JAX runtime (a LanguageModel)")
class ReasoningSSM(StepModel):
    """G prompts x N particles of step-level generation with the JAX runtime, scored by a
    verifier: a `HostTemperedFeynmanKac` (see `ppl.feynman_kac`), immutable once built."""

    generator_type = LanguageModel

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
        group_ids: Sequence[int] | None = None,
    ) -> None:
        """`mesh` (one axis) shards the prompts x particles batch over its devices: every array
        of the generations, the KV cache included, is split along the batch axis, and the
        compiled decode loop runs partitioned (B must be a multiple of the device count).
        `StepModel` documents the other arguments."""
        super().__init__(
            prompts,
            verifier,
            weighting,
            settings,
            proposal_correction,
            inverse_temperatures,
            group_ids,
        )
        self.lm = lm
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
        self.freeze()

    # The HostFeynmanKac protocol ----------------------------------------------------------
    def initial_sample(self, rng_key: jax.Array, num_particles: int) -> ReasoningParticles:
        """Prefill every prompt once and fan it out to `num_particles` empty generations
        (deterministic: `rng_key` is not used)."""
        del rng_key
        spent = self.started(num_particles)
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
        particles = ReasoningParticles(
            generations,
            jnp.zeros(batch, jnp.float32),
            jnp.full(batch, jnp.nan, jnp.float32),
            spent,
        )
        return particles if self.mesh is None else self.shard(particles)

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
        return self.score(particles, generations)

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
        return self.score(particles, generations, replayed=forced)

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
        """One step for every live row, row (g, i) drawing with `row_keys(rng_key)`."""
        num_particles = generations.tokens.shape[0] // self.num_groups
        return extend_generations(
            self.lm.params,
            self.lm.config,
            row_keys(rng_key, self, num_particles),
            generations,
            max_step_tokens=self.settings.max_step_tokens,
            max_steps=self.settings.max_steps,
            sampling=self.settings.sampling,
            eos_token_ids=self._eos,
            delimiter=self._delimiter,
        )

    def particles(
        self, generations: Generations, log_value: np.ndarray, reward: np.ndarray, spent: Budget
    ) -> ReasoningParticles:
        return ReasoningParticles(
            generations,
            jnp.asarray(log_value, jnp.float32),
            jnp.asarray(reward, jnp.float32),
            spent,
        )

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
    def token_ids(self, generations: Generations, rows: Sequence[int] | None = None) -> list:
        tokens, counts = np.asarray(generations.tokens), np.asarray(generations.num_tokens)
        rows = range(len(counts)) if rows is None else rows
        return [tokens[b, : counts[b]].tolist() for b in rows]

    def texts(self, particles: ReasoningParticles | Generations) -> list[str]:
        """The generated text of every row (special tokens dropped)."""
        generations = generations_of(particles)
        decode = self.lm.tokenizer.decode
        return [decode(ids, skip_special_tokens=True) for ids in self.token_ids(generations)]

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
