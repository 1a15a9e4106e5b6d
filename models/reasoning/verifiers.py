"""Verifiers: batched, composable scorers of partial generations with rewards in [0, 1].

A verifier is any callable `Candidates -> rewards [K]`: it sees K candidates at once (the live
rows of a batch), each with its prompt, its text so far and its latest reasoning step, and
returns one reward per candidate for the latest step given the prefix (a process reward), or
for the whole prefix. NaN means "could not score" and is reported by the samplers as a zero
weight. Verifiers run on the host; those that need the generator's log-probabilities or
hidden states read them from `Candidates.generations`.

This module holds the protocol, programmatic checkers and the wrappers; model-based verifiers
(LM judges, self-certainty, learned reward heads) build on the same protocol.

`VERIFIERS` names the verifiers a sweep can build from a frozen `VerifierSpec` (name, error
rates, softening): each registers a builder `(spec, references, lm) -> Verifier` where it is
defined, `@VERIFIERS.register(name, help)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppl.models.lm.errors import InvalidRewardsError
from ppl.models.reasoning.answers import answers_match, check_arithmetic, extract_answer
from ppl.registry import Registry

if TYPE_CHECKING:
    from ppl.models.lm.language_model import LanguageModel
    from ppl.models.lm.served import ServedModel

    Generator = LanguageModel | ServedModel  # what a verifier builder is given


@dataclasses.dataclass(frozen=True)
class Candidates:
    """K partial generations to score (rows of a batch, in row order)."""

    prompts: list[str]  # the problem text of each candidate's prompt
    texts: list[str]  # everything generated so far
    last_steps: list[str]  # the latest reasoning step (a suffix of the text)
    finished: np.ndarray  # [K] bool: the generation is complete
    groups: np.ndarray  # [K] index of the prompt (problem) in the batch
    rows: np.ndarray  # [K] row index in `generations`
    generations: Any = None  # the backend's generations (device state), for model verifiers

    def __len__(self) -> int:
        return len(self.texts)


Verifier = Callable[[Candidates], np.ndarray]

PRM_NEEDS_CHECKPOINT = (
    "the prm verifier needs a process reward model checkpoint directory: pass "
    "--prm-checkpoint PATH (Python: VerifierSpec('prm', checkpoint=PATH))"
)


@dataclasses.dataclass(frozen=True)
class VerifierSpec:
    """A registered verifier by name, made imperfect with controlled error rates (`Imperfect`,
    then `Softened` by `epsilon`) when either rate is nonzero; `epsilon` also softens the hard
    verdicts of the verifiers that have them, so that no particle gets weight 0. `checkpoint`
    is the weights directory of a verifier that loads its own (`prm`)."""

    name: str = "arithmetic"
    false_positive_rate: float = 0.0
    false_negative_rate: float = 0.0
    epsilon: float = 0.05
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        for rate in ("false_positive_rate", "false_negative_rate", "epsilon"):
            value = getattr(self, rate)
            if not (isinstance(value, int | float) and 0 <= value <= 1):  # NaN fails too
                raise ValueError(f"{rate} must be a number in [0, 1], got {value!r}")
        if self.name == "prm" and self.checkpoint is None:  # fail before a sweep starts
            raise ValueError(PRM_NEEDS_CHECKPOINT)
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_dir():
            raise ValueError(f"verifier checkpoint directory not found: {self.checkpoint}")

    def build(self, references: Sequence[str], lm: Generator) -> Verifier:
        """The verifier for problems with reference answers `references` (one per prompt) and
        the generator `lm` (which the `judge` asks)."""
        base = VERIFIERS.get(self.name)(self, references, lm)
        if self.false_positive_rate or self.false_negative_rate:
            imperfect = Imperfect(base, self.false_positive_rate, self.false_negative_rate)
            return Softened(imperfect, self.epsilon)
        return base

    def label(self) -> str:
        name = self.name
        if self.checkpoint is not None:  # results of two checkpoints are kept apart
            name = f"{name}[{Path(self.checkpoint).name}]"
        if self.false_positive_rate or self.false_negative_rate:
            rates = f"fp={self.false_positive_rate},fn={self.false_negative_rate}"
            return f"{name}({rates})"
        return name


VerifierBuilder = Callable[[VerifierSpec, Sequence[str], "Generator"], Verifier]
VERIFIERS: Registry[VerifierBuilder] = Registry("verifier")


def _as_rewards(values: Sequence[float] | np.ndarray, count: int, name: str) -> np.ndarray:
    rewards = np.asarray(values, np.float64)
    if rewards.shape != (count,):
        raise InvalidRewardsError(
            f"verifier {name} returned shape {rewards.shape}, expected ({count},)"
        )
    return rewards


@dataclasses.dataclass(frozen=True)
class ArithmeticSteps:
    """Checks every "a op b = c" claim of the latest step exactly.

    r = 1 - epsilon when all claims of the step are correct (or it makes none), epsilon when
    any is wrong. It cannot see a correct computation on the wrong operands, so it is an
    imperfect process verifier for chained arithmetic.
    """

    epsilon: float = 0.05

    def __call__(self, candidates: Candidates) -> np.ndarray:
        rewards = []
        for step in candidates.last_steps:
            check = check_arithmetic(step)
            ok = check.num_correct == check.num_claims
            rewards.append(1 - self.epsilon if ok else self.epsilon)
        return np.asarray(rewards)


@VERIFIERS.register("arithmetic", "checks every 'a op b = c' claim of the latest step exactly")
def _arithmetic(spec: VerifierSpec, references: Sequence[str], lm: Generator) -> Verifier:
    return ArithmeticSteps(spec.epsilon)


@dataclasses.dataclass(frozen=True)
class OutcomeCorrect:
    """An outcome checker against reference answers (one per prompt): 1 for a finished
    generation whose extracted answer matches, 0 for one that does not, and `pending` for
    unfinished generations (1: no information yet)."""

    references: tuple[str, ...]
    pending: float = 1.0

    def __call__(self, candidates: Candidates) -> np.ndarray:
        rewards = []
        for text, done, group in zip(
            candidates.texts, candidates.finished, candidates.groups, strict=True
        ):
            if not done:
                rewards.append(self.pending)
                continue
            rewards.append(float(answers_match(extract_answer(text), self.references[group])))
        return np.asarray(rewards)


@VERIFIERS.register("outcome", "1 if a finished generation's answer matches the reference")
def _outcome(spec: VerifierSpec, references: Sequence[str], lm: Generator) -> Verifier:
    return OutcomeCorrect(tuple(references))


@dataclasses.dataclass(frozen=True)
class Softened:
    """r' = epsilon + (1 - 2 epsilon) r: keeps a hard 0/1 verifier from killing particles."""

    verifier: Verifier
    epsilon: float = 0.05

    def __call__(self, candidates: Candidates) -> np.ndarray:
        rewards = _as_rewards(self.verifier(candidates), len(candidates), "inside Softened")
        return self.epsilon + (1 - 2 * self.epsilon) * rewards


@dataclasses.dataclass(frozen=True)
class Imperfect:
    """A verifier with controlled error rates (Inference Scaling fLaws).

    The base verifier's verdict is `reward >= threshold`. A candidate judged correct is
    reported incorrect with probability `false_negative_rate`, one judged incorrect is reported
    correct with probability `false_positive_rate`; the output is 1 or 0. The flip of each
    candidate is a fixed function of (`seed`, prompt, text), so the same candidate always gets
    the same verdict, as with a real imperfect verifier.
    """

    verifier: Verifier
    false_positive_rate: float = 0.0
    false_negative_rate: float = 0.0
    seed: int = 0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("false_positive_rate", "false_negative_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    def _uniform(self, prompt: str, text: str) -> float:
        digest = hashlib.blake2b(
            f"{self.seed}\x00{prompt}\x00{text}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "little") / 2**64

    def __call__(self, candidates: Candidates) -> np.ndarray:
        base = _as_rewards(self.verifier(candidates), len(candidates), "inside Imperfect")
        verdicts = []
        for reward, prompt, text in zip(base, candidates.prompts, candidates.texts, strict=True):
            if np.isnan(reward):
                verdicts.append(np.nan)
                continue
            u = self._uniform(prompt, text)
            if reward >= self.threshold:
                verdicts.append(0.0 if u < self.false_negative_rate else 1.0)
            else:
                verdicts.append(1.0 if u < self.false_positive_rate else 0.0)
        return np.asarray(verdicts)


@dataclasses.dataclass(frozen=True)
class Product:
    """The product of several verifiers' rewards (independent evidence)."""

    verifiers: tuple[Verifier, ...]

    def __call__(self, candidates: Candidates) -> np.ndarray:
        rewards = np.ones(len(candidates))
        for index, verifier in enumerate(self.verifiers):
            rewards = rewards * _as_rewards(verifier(candidates), len(candidates), str(index))
        return rewards


def needs_token_logprobs(verifier: Verifier) -> bool:
    """Whether `verifier` (or one it wraps) reads the generator's sampled-token log
    probabilities (`needs_token_logprobs = True` on its class), which a served generator
    then requests."""
    if getattr(verifier, "needs_token_logprobs", False):
        return True
    inner = [getattr(verifier, "verifier", None), *getattr(verifier, "verifiers", ())]
    return any(needs_token_logprobs(v) for v in inner if v is not None)


def call_verifier(verifier: Verifier, candidates: Candidates) -> np.ndarray:
    """Run `verifier` and check its output: shape [K]; values outside [0, 1] are errors."""
    rewards = _as_rewards(verifier(candidates), len(candidates), type(verifier).__name__)
    finite = rewards[~np.isnan(rewards)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise InvalidRewardsError(
            f"verifier {type(verifier).__name__} returned rewards outside [0, 1]: "
            f"[{finite.min():.3g}, {finite.max():.3g}]"
        )
    return rewards
