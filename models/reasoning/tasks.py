"""Reasoning tasks for inference-scaling sweeps: problems with reference answers, a default
generator, a default process verifier and step settings.

    chained_arithmetic   the in-repo model organism on "Start with 7. Add 5. ..." problems
                         (the default benchmark task: informative single-sample accuracy)
    word_arithmetic      two-step arithmetic word problems for SmolLM2-135M-Instruct in its
                         chat template (the embedded default model; it rarely solves them)
    word_sums            one-addition word problems for SmolLM2-135M-Instruct, with signal
                         (pass@1 0.13, pass@32 0.90; defined in word_sums.py)

Every method runs unchanged on any task and any checkpoint the loaders read (`--model`).
A task registers itself in `TASKS` with `register_task(Task(...))`; `ppl scale --task` offers
the registered names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.sampling import SamplingParams
from ppl.models.reasoning import chained_arithmetic
from ppl.models.reasoning.answers import answers_match
from ppl.models.reasoning.step_model import StepSettings
from ppl.registry import Registry


@dataclasses.dataclass(frozen=True)
class TaskProblem:
    prompt: str  # the text the generator is conditioned on (before any chat template)
    answer: str  # the reference final answer


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    description: str
    make_problems: Callable[[int, int], list[TaskProblem]]  # (seed, count)
    load_model: Callable[[], LanguageModel]
    settings: StepSettings
    grade: Callable[[str | None, str], bool] = answers_match  # (extracted answer, reference)


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    """Register `task` in `TASKS` under its name, with its description as help."""
    return TASKS.register(task.name, task.description)(task)


def _chained_problems(seed: int, count: int) -> list[TaskProblem]:
    return [
        TaskProblem(chained_arithmetic.prompt_text(p), str(p.answer))
        for p in chained_arithmetic.make_problems(seed, count)
    ]


def _load_organism() -> LanguageModel:
    from ppl.models.reasoning.organism import load_organism

    return load_organism()


_ITEMS = ("apples", "books", "coins", "marbles", "stickers", "pencils")
_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Ema", "Femi")


def _word_problems(seed: int, count: int) -> list[TaskProblem]:
    """ "Ana has 12 apples. She buys 3 bags of 4 apples. How many apples does she have now?"
    style problems: a + b * c, solved in two steps."""
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(count):
        name, item = _NAMES[rng.integers(len(_NAMES))], _ITEMS[rng.integers(len(_ITEMS))]
        a, b, c = (int(x) for x in rng.integers((5, 2, 2), (40, 6, 10)))
        prompt = (
            f"{name} has {a} {item}. {name} buys {b} bags with {c} {item} in each bag. How "
            f"many {item} does {name} have now? Solve it step by step, one step per "
            'paragraph, and end with "The answer is N."'
        )
        problems.append(TaskProblem(prompt, str(a + b * c)))
    return problems


def _load_default() -> LanguageModel:
    return LanguageModel.load()


register_task(
    Task(
        name="chained_arithmetic",
        description="chained +, -, * on integers; the in-repo organism (default task)",
        make_problems=_chained_problems,
        load_model=_load_organism,
        settings=StepSettings(
            delimiter="\n\n",
            max_step_tokens=16,  # a step "a op b = c" is at most about 12 tokens
            max_steps=8,  # six operations and the answer line
            sampling=SamplingParams(temperature=1.0),
        ),
    )
)
register_task(
    Task(
        name="word_arithmetic",
        description="two-step word problems in the chat template; SmolLM2-135M-Instruct",
        make_problems=_word_problems,
        load_model=_load_default,
        settings=StepSettings(
            delimiter="\n\n",
            max_step_tokens=64,
            max_steps=6,
            sampling=SamplingParams(temperature=0.7),
            chat=True,
        ),
    )
)
DEFAULT_TASK = "chained_arithmetic"


def get_task(name: str | None) -> Task:
    """The registered task `name` (default `DEFAULT_TASK`)."""
    return TASKS.get(name or DEFAULT_TASK)
