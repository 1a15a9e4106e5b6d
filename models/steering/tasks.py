"""Constrained-generation tasks for token-level steering on the default model.

    short-words   every word has at most 5 letters
    lipogram      no letter "e" (either case)
    regex         an answer of a given shape (a date, YYYY-MM-DD)
    json          a JSON object matching a small schema
    intersection  two prompts at once: the product of their next-token distributions

Each task gives its prompts (user turns, rendered in the model's chat template unless the
task says otherwise), its constraint automaton and its token limit; `check` tells whether a
generation satisfies the constraint. A task registers itself in `TASKS` with
`register_task(SteeringTask(...))`; `ppl steer --task` offers the registered names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ppl.models.constraints.automata import ByteAutomaton, forbidden_bytes, max_word_length, regex
from ppl.models.constraints.json_schema import schema_automaton
from ppl.registry import Registry

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 16},
    },
    "required": ["name", "age", "city"],
}


@dataclasses.dataclass(frozen=True)
class SteeringTask:
    name: str
    description: str
    prompts: tuple[str, ...]
    make_constraint: Callable[[], ByteAutomaton | None]
    max_tokens: int
    chat: bool = True

    def check(self, text: str) -> bool:
        constraint = self.make_constraint()
        return constraint is None or constraint.complete(text.encode()) == 0.0


TASKS: Registry[SteeringTask] = Registry("steering task")


def register_task(task: SteeringTask) -> SteeringTask:
    """Register `task` in `TASKS` under its name, with its description as help."""
    return TASKS.register(task.name, task.description)(task)


register_task(
    SteeringTask(
        "short-words",
        "every word has at most 5 letters",
        ("Write a short story about a cat who goes to the sea.",),
        lambda: max_word_length(5),
        32,
    )
)
register_task(
    SteeringTask(
        "lipogram",
        'no letter "e" or "E"',
        ("Describe the ocean in two sentences.",),
        lambda: forbidden_bytes(b"eE"),
        32,
    )
)
register_task(
    SteeringTask(
        "regex",
        "an answer shaped YYYY-MM-DD",
        ("On what date did Apollo 11 land on the Moon? Answer with the date only.",),
        lambda: regex(r"[12][0-9]{3}-[01][0-9]-[0-3][0-9]"),
        12,
    )
)
register_task(
    SteeringTask(
        "json",
        "a JSON object with a name, an age and a city",
        ("Describe a fictional person as a JSON object with a name, an age and a city.",),
        lambda: schema_automaton(PERSON_SCHEMA),
        40,
    )
)
register_task(
    SteeringTask(
        "intersection",
        "a continuation likely under both prompts (their product)",
        ("My favorite writer is probably", "My favorite physicist is probably"),
        lambda: None,
        8,
        chat=False,
    )
)


def get_task(name: str) -> SteeringTask:
    """The registered steering task `name`."""
    return TASKS.get(name)
