"""A synthetic chained-arithmetic task with one reasoning step per operation.

A problem starts from a number and applies a chain of operations::

    question: "Start with 7. Add 5. Multiply by 3. Subtract 4. What is the result?"
    solution: "7 + 5 = 12\\n\\n12 * 3 = 36\\n\\n36 - 4 = 32\\n\\nThe answer is 32."

Each step "a op b = c" is one reasoning step; steps are separated by a blank line ("\\n\\n")
and the solution ends with "The answer is N.". Every intermediate value stays in
`0..max_value` (no negative numbers): an operation that would leave the range is not drawn.
The model is conditioned on `prompt_text(problem)` (the question and a blank line).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

STEP_SEPARATOR = "\n\n"
OPERATIONS = ("+", "-", "*")
_PHRASES = {"+": "Add {}.", "-": "Subtract {}.", "*": "Multiply by {}."}
_STEP_PATTERN = re.compile(r"^\s*(-?\d+) ([-+*]) (-?\d+) = (-?\d+)\s*$")
_ANSWER_PATTERN = re.compile(r"The answer is (-?\d+)\.?")


@dataclasses.dataclass(frozen=True)
class Problem:
    """A question, its answer, and the reasoning steps of its reference solution."""

    question: str
    answer: int
    steps: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Step:
    """One parsed reasoning step "left op right = result"."""

    left: int
    op: str
    right: int
    result: int

    @property
    def is_correct(self) -> bool:
        """Whether `result` is the value of `left op right`."""
        return apply_operation(self.left, self.op, self.right) == self.result


def apply_operation(left: int, op: str, right: int) -> int:
    """The value of `left op right` for op in "+", "-", "*"."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")


def make_problems(
    seed: int,
    count: int,
    *,
    num_operations: int | tuple[int, int] = (3, 6),
    start_range: tuple[int, int] = (2, 50),
    add_range: tuple[int, int] = (1, 999),
    multiply_range: tuple[int, int] = (2, 9),
    max_value: int = 999,
) -> list[Problem]:
    """`count` problems drawn from `np.random.default_rng(seed)`; ranges are inclusive.

    A problem has `num_operations` operations, or a number drawn uniformly from that range
    when it is a (low, high) pair. The start value comes from `start_range`; each operation
    is drawn uniformly among those that keep the value in `0..max_value`: add or subtract an
    operand from `add_range`, or multiply by one from `multiply_range` (operands are capped
    so the result stays in range). The defaults are the distribution the organism was
    trained on.
    """
    low_ops, high_ops = (
        (num_operations, num_operations) if isinstance(num_operations, int) else num_operations
    )
    if count < 0 or not 1 <= low_ops <= high_ops:
        raise ValueError(
            f"need count >= 0 and 1 <= num_operations (low <= high), got {count}, {num_operations}"
        )
    if not 0 <= start_range[0] <= start_range[1] <= max_value:
        raise ValueError(f"start_range must lie in 0..max_value, got {start_range}")
    for name, (low, high) in (("add_range", add_range), ("multiply_range", multiply_range)):
        if not 0 <= low <= min(high, max_value):
            raise ValueError(f"{name} needs 0 <= low <= high and low <= max_value: {low, high}")
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(count):
        ops = int(rng.integers(low_ops, high_ops + 1))
        problems.append(_make_problem(rng, ops, start_range, add_range, multiply_range, max_value))
    return problems


def _make_problem(
    rng: np.random.Generator,
    num_operations: int,
    start_range: tuple[int, int],
    add_range: tuple[int, int],
    multiply_range: tuple[int, int],
    max_value: int,
) -> Problem:
    value = int(rng.integers(start_range[0], start_range[1] + 1))
    phrases, steps = [f"Start with {value}."], []
    for _ in range(num_operations):
        feasible = []
        if value + add_range[0] <= max_value:
            feasible.append("+")
        if value >= add_range[0]:
            feasible.append("-")
        if value * multiply_range[0] <= max_value:
            feasible.append("*")
        if not feasible:
            raise ValueError(f"no operation keeps {value} within 0..{max_value}")
        op = feasible[int(rng.integers(len(feasible)))]
        if op == "*":
            high = min(multiply_range[1], max_value // max(value, 1))
            operand = int(rng.integers(multiply_range[0], high + 1))
        elif op == "+":
            high = min(add_range[1], max_value - value)
            operand = int(rng.integers(add_range[0], high + 1))
        else:
            operand = int(rng.integers(add_range[0], min(add_range[1], value) + 1))
        result = apply_operation(value, op, operand)
        phrases.append(_PHRASES[op].format(operand))
        steps.append(f"{value} {op} {operand} = {result}")
        value = result
    phrases.append("What is the result?")
    return Problem(question=" ".join(phrases), answer=value, steps=tuple(steps))


def prompt_text(problem: Problem) -> str:
    """What the model is conditioned on: the question and a blank line."""
    return problem.question + STEP_SEPARATOR


def answer_line(answer: int) -> str:
    """The final line of a solution."""
    return f"The answer is {answer}."


def solution_text(problem: Problem) -> str:
    """The reference solution: the steps and the answer line, separated by blank lines."""
    return STEP_SEPARATOR.join([*problem.steps, answer_line(problem.answer)])


def parse_step(text: str) -> Step | None:
    """The step "a op b = c" in `text` (surrounding whitespace allowed), or None."""
    match = _STEP_PATTERN.match(text)
    if match is None:
        return None
    left, op, right, result = match.groups()
    return Step(int(left), op, int(right), int(result))


def parse_answer(text: str) -> int | None:
    """The number in the last "The answer is N." of `text`, or None."""
    found = _ANSWER_PATTERN.findall(text)
    return int(found[-1]) if found else None


def split_steps(text: str) -> list[str]:
    """The non-empty blocks of `text` separated by blank lines."""
    return [block.strip() for block in text.split(STEP_SEPARATOR) if block.strip()]
