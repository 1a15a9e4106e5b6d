"""The reasoning state-space model over a served model (an OpenAI-compatible server).

`ServedReasoningSSM` is the `ppl.models.reasoning.step_model.StepModel` backend whose
particles hold texts: a step is one completions request per distinct prefix among the live
rows (with `n` = the rows that share it; a server that ignores `n` gets one request per row)
that continues the (chat-formatted) prompt plus the steps so far and stops at the step
delimiter, sent concurrently by `ppl.models.lm.served.ServedModel`. Each request carries a
seed drawn from the step's PRNG key, so a run is reproducible on a server that honours seeds.
The prefix is sent as text, so the server tokenizes it afresh: where the model generated a
non-canonical tokenization (two "\n" tokens for "\n\n"), the in-process backend, which keeps
the generated tokens, continues a different token sequence.

What each method needs of the server:

- every method (pf, pg, pgpt, bon, wbon, sc, bom, beam, dvts) and the coverage sweep:
  completions with a stop string;
- the `self_certainty` verifier (any verifier with `needs_token_logprobs`): the sampled
  tokens' log probabilities (`ServerCapabilities.token_logprobs`), requested only then;
- `proposal_correction`: log q of the sampled tokens under the sampling distribution, which
  servers do not return; only at temperature 1 without top-k/top-p (q = p, the correction
  is 0) does it run;
- the `judge` and `reward_head` verifiers run the in-process model: use them with
  `--backend jax` or load the judge separately.

Replayed steps (the reference path of particle Gibbs) are appended as text with no request:
their tokens are not counted, as in the in-process backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from ppl.feynman_kac import row_keys
from ppl.models.lm.served import CapabilityError, Choice, CompletionRequest, ServedModel
from ppl.models.reasoning.generations import FINISHED_EOS, FINISHED_MAX_STEPS, RUNNING
from ppl.models.reasoning.reward_weighting import RewardWeighting
from ppl.models.reasoning.step_model import (
    BACKENDS,
    ReasoningParticles,
    StepModel,
    StepSettings,
    generations_of,
)
from ppl.models.reasoning.verifiers import Candidates, Verifier, needs_token_logprobs


class ServedStep(NamedTuple):
    """One reasoning step of a served generation: its text, its tokens, whether it ended
    with end-of-sequence (the generation's last step), and log p of its tokens (NaN if the
    server gave none)."""

    text: str
    num_tokens: int
    eos: bool
    logprob: float


class TextGenerations(NamedTuple):
    """B partial generations as text (host arrays, [B] each; `steps` a tuple per row)."""

    steps: tuple[tuple[ServedStep, ...], ...]
    num_tokens: np.ndarray  # generated tokens so far
    num_steps: np.ndarray
    step_start: np.ndarray  # num_tokens before the latest step
    finished: np.ndarray
    finish_reason: np.ndarray  # RUNNING / FINISHED_EOS / FINISHED_MAX_STEPS
    model_logprob: np.ndarray  # log p of the generated tokens (NaN if the server gave none)
    sampling_logprob: np.ndarray  # log q (NaN unless the sampler is the untempered model)
    step_model_logprob: np.ndarray
    step_sampling_logprob: np.ndarray

    def text(self, row: int) -> str:
        return "".join(step.text for step in self.steps[row])

    def take(self, rows: np.ndarray) -> TextGenerations:
        arrays = {
            name: np.asarray(value)[rows]
            for name, value in self._asdict().items()
            if name != "steps"
        }
        return TextGenerations(steps=tuple(self.steps[r] for r in rows), **arrays)


@BACKENDS.register("openai", "an OpenAI-compatible completions server (a ServedModel)")
class ServedReasoningSSM(StepModel):
    """G prompts x N particles of step-level generation by a served model, scored by a
    verifier: a `HostTemperedFeynmanKac`, immutable once built (module docstring)."""

    generator_type = ServedModel

    def __init__(
        self,
        served: ServedModel,
        prompts: Sequence[str],
        verifier: Verifier,
        weighting: RewardWeighting | None = None,
        settings: StepSettings | None = None,
        proposal_correction: bool = False,
        inverse_temperatures: Sequence[float] | None = None,
        group_ids: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            prompts,
            verifier,
            weighting,
            settings,
            proposal_correction,
            inverse_temperatures,
            group_ids,
        )
        sampling = self.settings.sampling
        self.untempered = sampling.temperature == 1 and not sampling.top_k and not sampling.top_p
        if proposal_correction and not self.untempered:
            raise CapabilityError(
                "proposal_correction needs log q of the sampled tokens under the sampling "
                "distribution, which a completions server does not return; use temperature "
                "1 without top-k/top-p, or the in-process backend"
            )
        self.served = served
        self.token_logprobs = proposal_correction or needs_token_logprobs(verifier)
        if self.token_logprobs:
            served.require_token_logprobs("this verifier (or proposal_correction)")
        self.prompt_texts = tuple(served.format_prompt(p, self.settings.chat) for p in prompts)
        self.freeze()

    # The HostFeynmanKac protocol ---------------------------------------------------------
    def initial_sample(self, rng_key: jax.Array, num_particles: int) -> ReasoningParticles:
        """`num_particles` empty generations per prompt (deterministic)."""
        del rng_key
        spent = self.started(num_particles)
        batch = self.num_groups * num_particles
        zeros_i, zeros_f = np.zeros(batch, np.int64), np.zeros(batch, np.float64)
        generations = TextGenerations(
            steps=((),) * batch,
            num_tokens=zeros_i,
            num_steps=zeros_i,
            step_start=zeros_i,
            finished=np.zeros(batch, bool),
            finish_reason=np.full(batch, RUNNING),
            model_logprob=zeros_f,
            sampling_logprob=zeros_f,
            step_model_logprob=zeros_f,
            step_sampling_logprob=zeros_f,
        )
        return self.particles(generations, zeros_f, np.full(batch, np.nan), spent)

    def transition_sample(
        self, rng_key: jax.Array, t: int, particles: ReasoningParticles
    ) -> ReasoningParticles:
        """Ask the server for the next step of every live row (one request per distinct
        prefix), then the verifier on every new step (the row's own step count is its time
        index, so `t` is not needed)."""
        generations = particles.generations
        return self.score(particles, self._extend(rng_key, generations, {}))

    def conditional_transition_sample(
        self,
        rng_key: jax.Array,
        t: int,
        particles: ReasoningParticles,
        reference_rows: np.ndarray,
        reference: Sequence[Sequence[ServedStep]],
    ) -> ReasoningParticles:
        """`transition_sample`, except that row `reference_rows[g]` appends the next step of
        the path `reference[g]` (from `trace`, log p included) instead of asking the
        server."""
        generations = particles.generations
        forced: dict[int, ServedStep] = {}
        for row, path in zip(np.asarray(reference_rows), reference, strict=True):
            row = int(row)
            if not generations.finished[row] and generations.num_steps[row] < len(path):
                forced[row] = path[generations.num_steps[row]]
        replayed = np.zeros(generations.finished.shape[0], bool)
        replayed[list(forced)] = True
        return self.score(particles, self._extend(rng_key, generations, forced), replayed)

    def trace(self, particles: ReasoningParticles, rows: Sequence[int]) -> list[list[ServedStep]]:
        """The steps of `rows`, to replay with `conditional_transition_sample`."""
        return [list(particles.generations.steps[row]) for row in rows]

    def gather(self, particles: ReasoningParticles, ancestors: jax.Array) -> ReasoningParticles:
        rows = np.asarray(ancestors)
        return ReasoningParticles(
            particles.generations.take(rows),
            np.asarray(particles.log_value)[rows],
            np.asarray(particles.reward)[rows],
            particles.spent,
        )

    # Views -------------------------------------------------------------------------------
    def texts(self, particles: ReasoningParticles | TextGenerations) -> list[str]:
        generations = generations_of(particles)
        return [generations.text(row) for row in range(len(generations.steps))]

    def candidates(self, generations: TextGenerations, rows: np.ndarray) -> Candidates:
        groups = self.groups(generations)[rows]
        return Candidates(
            prompts=[self.prompts[g] for g in groups],
            texts=[generations.text(int(b)) for b in rows],
            last_steps=[generations.steps[b][-1].text for b in rows],
            finished=generations.finished[rows],
            groups=groups,
            rows=np.asarray(rows),
            generations=generations,
        )

    # Steps -------------------------------------------------------------------------------
    def _extend(
        self, rng_key: jax.Array, generations: TextGenerations, forced: dict[int, ServedStep]
    ) -> TextGenerations:
        """Every live row gains a step: `forced[row]` where given, else the server's."""
        live = np.flatnonzero(~generations.finished)
        asked = [int(row) for row in live if int(row) not in forced]
        keys = row_keys(rng_key, self, len(generations.steps) // self.num_groups)
        seeds = np.asarray(
            jax.vmap(lambda key: jax.random.randint(key, (), 0, 2**31 - 1))(keys), np.int64
        )
        sampling = self.settings.sampling
        groups = self.groups(generations)
        prefixes: dict[str, list[int]] = {}  # rows with the same text share one request
        for row in asked:
            prefixes.setdefault(self.prompt_texts[groups[row]] + generations.text(row), []).append(
                row
            )
        requests = [
            CompletionRequest(
                prompt=prefix,
                max_tokens=self.settings.max_step_tokens,
                stop=(self.settings.delimiter,),
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                seed=int(seeds[rows[0]]),
                n=len(rows),
                logprobs=self.token_logprobs,
            )
            for prefix, rows in prefixes.items()
        ]
        answers = self.served.complete(requests)
        new = dict(forced)
        for rows, choices in zip(prefixes.values(), answers, strict=True):
            for row, choice in zip(rows, choices, strict=True):
                new[row] = _step(choice)
        out = generations.take(np.arange(len(generations.steps)))  # copies of every array
        steps = list(out.steps)
        for row, step in new.items():
            sampling_logprob = step.logprob if self.untempered else np.nan
            steps[row] = (*steps[row], step)
            out.step_start[row] = out.num_tokens[row]
            out.num_tokens[row] += step.num_tokens
            out.num_steps[row] += 1
            out.step_model_logprob[row] = step.logprob
            out.step_sampling_logprob[row] = sampling_logprob
            out.model_logprob[row] += step.logprob
            out.sampling_logprob[row] += sampling_logprob
            if step.eos:
                out.finished[row], out.finish_reason[row] = True, FINISHED_EOS
            elif out.num_steps[row] >= self.settings.max_steps:
                out.finished[row], out.finish_reason[row] = True, FINISHED_MAX_STEPS
        return out._replace(steps=tuple(steps))


def _step(choice: Choice) -> ServedStep:
    logprob = np.nan if choice.token_logprobs is None else float(sum(choice.token_logprobs))
    return ServedStep(choice.text, choice.num_tokens, choice.finish == "eos", logprob)
