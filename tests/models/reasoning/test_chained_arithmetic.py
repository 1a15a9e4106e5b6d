"""The chained-arithmetic task: deterministic problems, correct steps, parseable solutions."""

from __future__ import annotations

import re

import pytest

from ppl.models.reasoning.chained_arithmetic import (
    Problem,
    Step,
    make_problems,
    parse_answer,
    parse_step,
    prompt_text,
    solution_text,
    split_steps,
)

QUESTION = re.compile(r"^Start with (\d+)\.((?: (?:Add|Subtract|Multiply by) \d+\.)+) What is")
PHRASE_OPS = {"Add": "+", "Subtract": "-", "Multiply by": "*"}


def question_chain(problem: Problem) -> tuple[int, list[tuple[str, int]]]:
    """The start value and the (op, operand) list read back from the question text."""
    match = QUESTION.match(problem.question)
    assert match is not None, problem.question
    ops = re.findall(r"(Add|Subtract|Multiply by) (\d+)\.", match.group(2))
    return int(match.group(1)), [(PHRASE_OPS[name], int(n)) for name, n in ops]


def test_problems_are_deterministic_per_seed():
    assert make_problems(3, 50) == make_problems(3, 50)
    assert make_problems(3, 50) != make_problems(4, 50)
    assert make_problems(3, 20) == make_problems(3, 50)[:20]


@pytest.mark.parametrize("num_operations", [1, 4, 6])
def test_steps_follow_the_question_and_their_arithmetic_is_right(num_operations):
    problems = make_problems(0, 300, num_operations=num_operations, max_value=500)
    for problem in problems:
        start, chain = question_chain(problem)
        steps = [parse_step(s) for s in problem.steps]
        assert len(steps) == len(chain) == num_operations
        value = start
        for step, (op, operand) in zip(steps, chain, strict=True):
            assert step is not None and step.is_correct
            assert (step.left, step.op, step.right) == (value, op, operand)
            assert 0 <= step.result <= 500
            value = step.result
        assert problem.answer == value


def test_all_operations_occur_and_ranges_hold():
    problems = make_problems(1, 500, start_range=(2, 9), add_range=(1, 20), multiply_range=(2, 3))
    steps = [parse_step(s) for p in problems for s in p.steps]
    assert {s.op for s in steps if s is not None} == {"+", "-", "*"}
    for problem in problems:
        assert 2 <= question_chain(problem)[0] <= 9
    for s in steps:
        assert s is not None
        assert 1 <= s.right <= 20 if s.op in "+-" else 2 <= s.right <= 3


def test_solution_text_parses_back():
    problem = Problem(
        "Start with 7. Add 5. Multiply by 3. Subtract 4. What is the result?",
        32,
        (
            "7 + 5 = 12",
            "12 * 3 = 36",
            "36 - 4 = 32",
        ),
    )
    text = solution_text(problem)
    assert text == "7 + 5 = 12\n\n12 * 3 = 36\n\n36 - 4 = 32\n\nThe answer is 32."
    assert prompt_text(problem) == problem.question + "\n\n"
    blocks = split_steps(text)
    assert [parse_step(b) for b in blocks[:-1]] == [
        Step(7, "+", 5, 12),
        Step(12, "*", 3, 36),
        Step(36, "-", 4, 32),
    ]
    assert parse_answer(blocks[-1]) == 32
    for problem in make_problems(5, 100):
        blocks = split_steps(solution_text(problem))
        assert tuple(blocks[:-1]) == problem.steps
        assert parse_answer(blocks[-1]) == problem.answer


def test_parsers_reject_other_text_and_flag_wrong_arithmetic():
    assert parse_step("12 * 3 = 35") == Step(12, "*", 3, 35)
    assert not Step(12, "*", 3, 35).is_correct
    assert parse_step("12 * 3 =") is None
    assert parse_step("The answer is 3.") is None
    assert parse_answer("7 + 5 = 12") is None
    assert parse_answer("The answer is 4.\n\nThe answer is 12.") == 12


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_operations"):
        make_problems(0, 3, num_operations=0)
    with pytest.raises(ValueError, match="add_range"):
        make_problems(0, 3, add_range=(5, 2))
