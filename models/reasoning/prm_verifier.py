"""The `prm` verifier: a process reward model checkpoint (`ppl.models.reasoning.prm`) scoring
the steps of each candidate.

The text so far is split into steps at the step delimiter (the generator's, default "\\n\\n";
blank pieces dropped), the PRM scores every step given the prompt and the steps before it, and
the verifier returns, per candidate,

    last:    r_n                  the latest step's reward (a process reward; default)
    min:     min_i r_i            the weakest step so far
    product: prod_i r_i           every step correct, steps independent

NaN where the candidate does not fit in the PRM's context.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from ppl.models.lm.language_model import DTYPES, LanguageModel
from ppl.models.reasoning.prm import ProcessRewardModel, load_prm
from ppl.models.reasoning.verifiers import (
    PRM_NEEDS_CHECKPOINT,
    VERIFIERS,
    Candidates,
    Verifier,
    VerifierSpec,
)

StepAggregation = Literal["last", "min", "product"]

if TYPE_CHECKING:
    from ppl.models.reasoning.verifiers import Generator


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """The non-blank steps of `text` (stripped); one empty step when there are none."""
    if not delimiter:
        raise ValueError("the step delimiter must be a non-empty string")
    return [piece.strip() for piece in text.split(delimiter) if piece.strip()] or [""]


class StepScorer(Protocol):
    """What scores steps: a loaded `ProcessRewardModel`, or a `ServedPRM`."""

    def step_rewards(
        self, prompts: Sequence[str], steps: Sequence[Sequence[str]]
    ) -> list[np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class PRMVerifier:
    """A verifier from a step scorer: a loaded `ProcessRewardModel` or a
    `ppl.models.reasoning.served_prm.ServedPRM` (module doc)."""

    prm: StepScorer
    step_delimiter: str = "\n\n"
    aggregation: StepAggregation = "last"

    def __post_init__(self) -> None:
        if self.aggregation not in ("last", "min", "product"):
            raise ValueError(
                f"aggregation must be 'last', 'min' or 'product', got {self.aggregation!r}"
            )
        if not self.step_delimiter:
            raise ValueError("the step delimiter must be a non-empty string")

    def __call__(self, candidates: Candidates) -> np.ndarray:
        steps = [split_steps(text, self.step_delimiter) for text in candidates.texts]
        per_step = self.prm.step_rewards(candidates.prompts, steps)
        if self.aggregation == "last":
            return np.asarray([r[-1] for r in per_step])
        if self.aggregation == "min":
            return np.asarray([r.min() for r in per_step])
        return np.asarray([r.prod() for r in per_step])


@functools.lru_cache(maxsize=1)
def shared_prm(directory: str, dtype: str = "float32") -> ProcessRewardModel:
    """`load_prm(directory, dtype=dtype)`, kept while it is the last one asked for: a sweep
    builds its verifier once per batch of problems, and must not reload the weights each time."""
    return load_prm(directory, dtype=dtype)


@VERIFIERS.register("prm", "a process reward model checkpoint (--prm-checkpoint DIR)")
def _prm(spec: VerifierSpec, references: Sequence[str], lm: Generator | None) -> Verifier:
    if spec.checkpoint is None:
        raise ValueError(PRM_NEEDS_CHECKPOINT)
    dtype = "float32"
    if isinstance(lm, LanguageModel):  # the generator's computation dtype (`ppl scale --dtype`)
        dtype = next(name for name, value in DTYPES.items() if value == lm.dtype)
    return PRMVerifier(shared_prm(str(Path(spec.checkpoint).expanduser().resolve()), dtype))
