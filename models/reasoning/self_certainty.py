"""Self-certainty: a reward from the generator's own log-probabilities, with no extra model call.

For a candidate whose scored span (the latest step, or the whole generation) is the tokens
y_1..y_n, the reward is the geometric mean of the per-token probabilities,

    r = exp( (1/n) sum_i log p(y_i | prompt, y_<i) ),

that is, 1 / perplexity of the span, in (0, 1]. The sums of log p per step and per generation
are already in `Candidates.generations` (`step_model_logprob`, `model_logprob`, or the
`sampling_*` versions under the sampling distribution), and n comes from `num_tokens` and
`step_start`, so scoring costs nothing on the device.

This is not the KL-to-uniform "self-certainty" of Kang et al. (2025), which averages
KL(U || p(. | prompt, y_<i)) over positions and needs every position's full next-token
distribution; the runtime keeps only the sampled token's log p (and the last logits), so that
score would need a second scoring pass. The mean log-probability used here is the other
common confidence signal (the negative of the mean token surprisal); both reward spans the
model produced with concentrated probability, but they differ: the KL version also credits
confident distributions whose sampled token was not the mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from ppl.models.reasoning.verifiers import VERIFIERS, Candidates, Verifier, VerifierSpec

if TYPE_CHECKING:
    from ppl.models.reasoning.verifiers import Generator


@dataclasses.dataclass(frozen=True)
class SelfCertainty:
    """r = exp(mean log p per token) of the latest step (`scope="step"`) or of the whole
    generation so far (`scope="generation"`).

    `logprob="model"` uses the untempered model's log p (the generator's own belief);
    `"sampling"` uses log q under the sampling distribution (temperature, top-k, top-p). A
    span of no tokens gets NaN (could not score).
    """

    scope: Literal["step", "generation"] = "step"
    logprob: Literal["model", "sampling"] = "model"
    needs_token_logprobs: ClassVar[bool] = True  # a served generator must return them

    def __post_init__(self) -> None:
        if self.scope not in ("step", "generation"):
            raise ValueError(f"scope must be 'step' or 'generation', got {self.scope!r}")
        if self.logprob not in ("model", "sampling"):
            raise ValueError(f"logprob must be 'model' or 'sampling', got {self.logprob!r}")

    def __call__(self, candidates: Candidates) -> np.ndarray:
        generations = candidates.generations
        if generations is None:
            raise ValueError(
                "SelfCertainty reads the generator's log-probabilities from "
                "Candidates.generations, which is None here"
            )
        rows = np.asarray(candidates.rows)
        num_tokens = np.asarray(generations.num_tokens)[rows].astype(np.float64)
        if self.scope == "step":
            total = generations.step_model_logprob
            if self.logprob == "sampling":
                total = generations.step_sampling_logprob
            count = num_tokens - np.asarray(generations.step_start)[rows]
        else:
            total = generations.model_logprob
            if self.logprob == "sampling":
                total = generations.sampling_logprob
            count = num_tokens
        summed = np.asarray(total, np.float64)[rows]
        if np.any(np.isnan(summed) & (count > 0)):
            raise ValueError(
                "SelfCertainty needs the sampled tokens' log probabilities, and the generator "
                "returned none (a served model whose server does not give them)"
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            rewards = np.exp(summed / count)
        return np.where(count > 0, np.minimum(rewards, 1.0), np.nan)


@VERIFIERS.register("self_certainty", "exp(mean log p per token) of the step, from the generator")
def _self_certainty(spec: VerifierSpec, references: Sequence[str], lm: Generator) -> Verifier:
    return SelfCertainty()
