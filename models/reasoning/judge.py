"""An LM-as-judge process reward: ask a language model whether the steps so far are correct.

For candidate k the judge renders `template` with the problem (`Candidates.prompts[k]`) and
the steps so far (`Candidates.texts[k]`), optionally as one user turn of the judge's chat
template, and reads the judge's probabilities of the two answer strings after it:

    r_k = P(yes | prompt_k) / (P(yes | prompt_k) + P(no | prompt_k))
        = sigmoid(log P(yes | prompt_k) - log P(no | prompt_k))

where P(a | prompt) is the probability of the answer's whole token sequence a_1..a_m,
prod_i p(a_i | prompt, a_<i): the next-token probability when the answer is one token, as
"Yes" and "No" are for SmolLM2 (the byte-level test tokenizer needs several). The
normalisation conditions on the answer being one of the two: the judge's mass on every other
continuation is ignored, so r is in [0, 1] however much of that mass the judge puts elsewhere.
All candidates of a call run in padded batches of `batch_size` rows: one prefill pass for the
prompts, plus one short pass per answer when an answer has more than one token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm.cache import KVCache, init_cache
from ppl.models.lm.decoding import extend, prefill
from ppl.models.lm.language_model import LanguageModel, pad_batch
from ppl.models.reasoning.verifiers import VERIFIERS, Candidates, Verifier, VerifierSpec

if TYPE_CHECKING:
    from ppl.models.reasoning.verifiers import Generator

DEFAULT_TEMPLATE = (
    "Here is a problem and the first steps of a solution.\n\n"
    "Problem: {problem}\n\n"
    "Steps so far:\n{steps}\n\n"
    "Are all of the steps so far correct? Answer Yes or No."
)
RAW_ANSWER_CUE = "\nAnswer:"  # ends the default prompt of a judge without a chat template
_WIDTH_MULTIPLE = 32  # pad prompts to a multiple of this many tokens (fewer compilations)


def row_buckets(count: int, batch_size: int) -> list[tuple[int, int, int]]:
    """Chunks (start, stop, padded rows) covering `count` rows, at most `batch_size` each.

    A chunk is padded to the next power of two (at most `batch_size`), so the jit-compiled
    passes see few distinct batch shapes as the number of live rows changes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        chunks.append((start, stop, min(batch_size, 1 << (stop - start - 1).bit_length())))
    return chunks


class LMJudge:
    """A verifier that asks `lm` whether the steps so far are correct (see the module doc).

    Args:
        lm: the judge; any model the runtime loads (the tiny test model, SmolLM2, the
            organism). It need not be the generator.
        template: the judge prompt, with the placeholders `{problem}` and `{steps}`
            (default `DEFAULT_TEMPLATE`, followed by `RAW_ANSWER_CUE` when `chat` is False).
        yes: the affirmative answer string, tokenized as a continuation of the prompt (no
            special tokens); they must tokenize differently. Default "Yes" / "No" with
            `chat` (the assistant turn starts with the word, no space) and " Yes" / " No"
            without (after "Answer:"). On SmolLM2 these put about half of the next-token
            mass on the two answers, while " Yes" after the chat template gets about 1e-4.
        no: the negative answer string (default "No", or " No" without `chat`).
        chat: render the prompt as one user turn of the judge's chat template (the answer is
            then the first text of the assistant turn).
        batch_size: candidates per forward pass; bounds memory to one pass of `batch_size`
            padded prompts.

    A candidate whose judge prompt plus the longer answer does not fit in the judge's context
    gets NaN ("could not score"), which the samplers report and treat as zero weight; the
    other candidates of the batch are scored as usual.
    """

    def __init__(
        self,
        lm: LanguageModel,
        template: str | None = None,
        yes: str | None = None,
        no: str | None = None,
        chat: bool = True,
        batch_size: int = 16,
    ) -> None:
        if template is None:
            template = DEFAULT_TEMPLATE if chat else DEFAULT_TEMPLATE + RAW_ANSWER_CUE
        if yes is None or no is None:
            yes, no = ("Yes", "No") if chat else (" Yes", " No")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if chat and not lm.tokenizer.chat_template:
            raise ValueError(f"the judge {lm.name!r} has no chat template; pass chat=False")
        try:
            template.format(problem="", steps="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"the judge template must use only the placeholders {{problem}} and {{steps}} "
                f"(write literal braces as {{{{ }}}}): {error!r}"
            ) from error
        self.lm = lm
        self.template = template
        self.chat = chat
        self.batch_size = batch_size
        self.yes_ids = lm.tokenizer.encode(yes, add_special_tokens=False)
        self.no_ids = lm.tokenizer.encode(no, add_special_tokens=False)
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"the answers {yes!r} and {no!r} must each encode to some tokens")
        if self.yes_ids == self.no_ids:
            raise ValueError(f"the answers {yes!r} and {no!r} encode to the same tokens")

    def prompt(self, problem: str, steps: str) -> str:
        """The judge prompt for one candidate (before the chat template)."""
        return self.template.format(problem=problem, steps=steps.strip())

    def __call__(self, candidates: Candidates) -> np.ndarray:
        pairs = zip(candidates.prompts, candidates.texts, strict=True)
        return self.rewards([self.prompt(problem, steps) for problem, steps in pairs])

    def rewards(self, prompts: Sequence[str]) -> np.ndarray:
        """r = P(yes) / (P(yes) + P(no)) after each rendered judge prompt; NaN if too long."""
        log_yes, log_no = self.answer_logprobs(prompts)
        with np.errstate(invalid="ignore"):
            return 1.0 / (1.0 + np.exp(log_no - log_yes))

    def answer_logprobs(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """log P(yes | prompt) and log P(no | prompt) [K] (float64; NaN for prompts that do not
        fit in the judge's context with the longer answer)."""
        prompt_ids = self.lm.encode_prompts(prompts, chat=self.chat) if len(prompts) else []
        answer_length = max(len(self.yes_ids), len(self.no_ids))
        fits = np.asarray(
            [len(ids) + answer_length <= self.lm.config.context_length for ids in prompt_ids], bool
        )
        log_yes = np.full(len(prompt_ids), np.nan)
        log_no = np.full(len(prompt_ids), np.nan)
        rows = np.flatnonzero(fits)
        for start, stop, padded in row_buckets(len(rows), self.batch_size):
            chunk = rows[start:stop]
            yes, no = self._score_chunk([prompt_ids[i] for i in chunk], padded)
            log_yes[chunk], log_no[chunk] = yes, no
        return log_yes, log_no

    def _score_chunk(
        self, prompt_ids: list[list[int]], padded_rows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        count = len(prompt_ids)
        rows = prompt_ids + [[0]] * (padded_rows - count)  # dummy rows keep the batch shape
        tokens, lengths = pad_batch(rows, _WIDTH_MULTIPLE)
        tail = max(len(self.yes_ids), len(self.no_ids)) - 1  # answer tokens fed after the prompt
        capacity = 0  # one-token answers need only the next-token logits, no cache
        if tail:
            needed = max(map(len, prompt_ids)) + tail
            rounded = -(-needed // _WIDTH_MULTIPLE) * _WIDTH_MULTIPLE
            capacity = min(rounded, self.lm.config.context_length)
        cache = init_cache(self.lm.config, padded_rows, capacity, self.lm.dtype)
        logits, cache = prefill(self.lm.params, self.lm.config, tokens, lengths, cache)
        first_ids = jnp.asarray([self.yes_ids[0], self.no_ids[0]], jnp.int32)
        first = np.asarray(_first_logprobs(logits, first_ids), np.float64)
        log_yes, log_no = first[:count, 0], first[:count, 1]
        if tail:
            log_yes = log_yes + self._rest_logprob(cache, self.yes_ids, tail)[:count]
            log_no = log_no + self._rest_logprob(cache, self.no_ids, tail)[:count]
        return log_yes, log_no

    def _rest_logprob(self, cache: KVCache, answer: list[int], tail: int) -> np.ndarray:
        """sum_{i>=2} log p(a_i | prompt, a_<i), feeding a_1..a_{m-1} after the cached prompt."""
        if len(answer) == 1:
            return np.zeros(cache.batch_size)
        batch = cache.batch_size
        fed = np.zeros((batch, tail), np.int32)
        fed[:, : len(answer) - 1] = answer[:-1]
        num_new = jnp.full((batch,), len(answer) - 1, jnp.int32)
        logits, _ = extend(self.lm.params, self.lm.config, jnp.asarray(fed), num_new, cache)
        targets = np.zeros((tail,), np.int32)
        targets[: len(answer) - 1] = answer[1:]
        per_token = np.asarray(_target_logprobs(logits, jnp.asarray(targets)), np.float64)
        return per_token[:, : len(answer) - 1].sum(axis=1)


@VERIFIERS.register("judge", "the generator asked whether the steps so far are correct")
def _judge(spec: VerifierSpec, references: Sequence[str], lm: Generator) -> Verifier:
    if not isinstance(lm, LanguageModel):
        raise ValueError(
            "the judge verifier asks the in-process model; with a served generator use "
            "--backend jax, or another verifier"
        )
    return LMJudge(lm, chat=lm.tokenizer.chat_template is not None)


@jax.jit
def _first_logprobs(logits: jax.Array, first_ids: jax.Array) -> jax.Array:
    """[B, 2] log p(yes_1), log p(no_1) from next-token logits [B, V]."""
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return logprobs[:, first_ids]


@jax.jit
def _target_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """[B, S] log p(targets[s]) from logits [B, S, V] (the same targets in every row)."""
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logprobs, targets[None, :, None], axis=-1)[..., 0]
