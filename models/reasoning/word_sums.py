"""`word_sums`: one-addition word problems for SmolLM2-135M-Instruct, and the `grounded`
process verifier that checks every line's numbers and claims.

    "Tom has 6 apples. He gets 5 more apples. How many apples does Tom have now?
     End with "The answer is" and the number."        reference 11

The embedded 135M model solves about one in eight of these per sample (mostly because it
often computes a wrong sum or never says "The answer is"), and most problems are solved by
some of 32 samples: a task on which inference-time scaling can be seen (measured by
`benchmarks/task_signal.py`; numbers in docs/reasoning.md). Steps are lines.

`GroundedArithmetic` scores the latest line: every "a op b = c" claim in it must hold, every
number it writes must appear in the problem or be derived (the result of a correct claim
written so far, this line included), and an answer it states must be derived; a finished
generation must have stated an answer. So "Tom has 6 + 5 = 11 apples." and then "The answer
is 11." pass, while "He has 16 apples.", "6 - 5 = 2" and "The answer is 6." fail. It never
sees the reference: a correct computation of the wrong operation ("6 - 5 = 1", then "The
answer is 1.") passes, and a right answer stated without shown work fails, so it is an
imperfect process verifier that correlates with the outcome without being it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.sampling import SamplingParams
from ppl.models.reasoning.answers import arithmetic_claims, extract_answer
from ppl.models.reasoning.step_model import StepSettings
from ppl.models.reasoning.tasks import Task, TaskProblem, register_task
from ppl.models.reasoning.verifiers import VERIFIERS, Candidates, Verifier, VerifierSpec

if TYPE_CHECKING:
    from ppl.models.reasoning.verifiers import Generator

NAMES = (("Tom", "He"), ("Mia", "She"), ("Sam", "He"), ("Ana", "She"), ("Leo", "He"))
ITEMS = ("apples", "books", "coins", "marbles", "pencils", "cookies")
ANSWER_FORMAT = 'End with "The answer is" and the number.'
LOWEST, HIGHEST = 2, 9  # both addends are drawn uniformly from LOWEST..HIGHEST


def make_problems(seed: int, count: int) -> list[TaskProblem]:
    """`count` problems "<name> has a <items>. <pronoun> gets b more <items>. ..." with a, b
    uniform on 2..9 and the reference a + b, the same for the same seed."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(count):
        name, pronoun = NAMES[rng.integers(len(NAMES))]
        item = ITEMS[rng.integers(len(ITEMS))]
        a, b = (int(x) for x in rng.integers(LOWEST, HIGHEST + 1, 2))
        prompt = (
            f"{name} has {a} {item}. {pronoun} gets {b} more {item}. How many {item} does "
            f"{name} have now? {ANSWER_FORMAT}"
        )
        problems.append(TaskProblem(prompt, str(a + b)))
    return problems


_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")


def numbers_in(text: str) -> list[Fraction]:
    """The non-negative numbers written in `text` ("6", "1.5"; digits inside words skipped)."""
    return [Fraction(match.group(0)) for match in _NUMBER.finditer(text)]


def _results(text: str) -> set[Fraction]:
    return {claim.result for claim in arithmetic_claims(text) if claim.correct}


def _as_number(answer: str) -> Fraction | None:
    try:
        return Fraction(answer)
    except (ValueError, ZeroDivisionError):
        return None


def line_is_grounded(problem: str, before: str, line: str) -> bool:
    """Whether `line`, written after `before` for the problem text `problem`:

    - makes only correct "a op b = c" claims,
    - writes only numbers that are in the problem or derived (results of correct claims in
      `before` or in the line), and
    - if it states an answer ("The answer is 11."), states a derived number.

    A line with no numbers passes."""
    claims = arithmetic_claims(line)
    if not all(claim.correct for claim in claims):
        return False
    derived = _results(before) | {claim.result for claim in claims}
    known = set(numbers_in(problem)) | derived
    if not all(number in known for number in numbers_in(line)):
        return False
    answer = extract_answer(line)
    return answer is None or _as_number(answer) in derived


@dataclasses.dataclass(frozen=True)
class GroundedArithmetic:
    """r = 1 - epsilon for a latest line that `line_is_grounded`, epsilon otherwise; a finished
    generation that never states an answer also gets epsilon at its last line."""

    epsilon: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.epsilon < 0.5:
            raise ValueError(f"epsilon must be in [0, 0.5), got {self.epsilon}")

    def __call__(self, candidates: Candidates) -> np.ndarray:
        rewards = []
        for prompt, text, step, finished in zip(
            candidates.prompts,
            candidates.texts,
            candidates.last_steps,
            candidates.finished,
            strict=True,
        ):
            before = text[: len(text) - len(step)] if text.endswith(step) else text
            ok = line_is_grounded(prompt, before, step)
            ok = ok and not (finished and extract_answer(text) is None)
            rewards.append(1 - self.epsilon if ok else self.epsilon)
        return np.asarray(rewards, np.float64)


@VERIFIERS.register(
    "grounded",
    "the latest line's claims hold and its numbers come from the problem or earlier results",
)
def _grounded(spec: VerifierSpec, references: Sequence[str], lm: Generator) -> Verifier:
    return GroundedArithmetic(spec.epsilon)


def _load_default() -> LanguageModel:
    return LanguageModel.load()


TASK = register_task(
    Task(
        name="word_sums",
        description="one-addition word problems (a + b, 2..9) in the chat template; SmolLM2-135M",
        make_problems=make_problems,
        load_model=_load_default,
        settings=StepSettings(
            delimiter="\n",  # a step is a line: "Tom has 6 + 5 = 11 apples." is ~16 tokens
            max_step_tokens=24,
            max_steps=3,  # the work line, the answer line and one spare
            sampling=SamplingParams(temperature=0.7),
            chat=True,
        ),
    )
)
