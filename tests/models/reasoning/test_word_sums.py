"""The word_sums task: problems, grading, the grounded line verifier, the signal report."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from ppl.models.lm.sampling import SamplingParams
from ppl.models.reasoning.answers import extract_answer
from ppl.models.reasoning.tasks import TASKS, get_task
from ppl.models.reasoning.verifiers import VERIFIERS, Candidates, VerifierSpec
from ppl.models.reasoning.word_sums import (
    GroundedArithmetic,
    line_is_grounded,
    make_problems,
    numbers_in,
)

PROBLEM = (
    "Tom has 6 apples. He gets 5 more apples. How many apples does Tom have now? "
    'End with "The answer is" and the number.'
)


def test_problems_are_deterministic_per_seed_and_references_are_the_sums():
    first, again, other = make_problems(3, 40), make_problems(3, 40), make_problems(4, 40)
    assert first == again
    assert first != other
    for problem in first:
        a, b = (int(x) for x in re.findall(r"\d+", problem.prompt))
        assert 2 <= a <= 9 and 2 <= b <= 9
        assert problem.answer == str(a + b)
        assert problem.prompt.endswith('End with "The answer is" and the number.')
    assert len({p.prompt for p in first}) > 30  # names, items and addends vary
    assert make_problems(3, 0) == []


def test_negative_count_is_refused():
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        make_problems(0, -1)


def test_task_is_registered_with_chat_lines_and_the_grounded_verifier():
    task = get_task("word_sums")
    assert TASKS.get("word_sums") is task
    assert task.settings.chat and task.settings.delimiter == "\n"
    assert (task.settings.max_step_tokens, task.settings.max_steps) == (24, 3)
    assert task.settings.sampling == SamplingParams(temperature=0.7)
    verifier = VERIFIERS.get("grounded")(VerifierSpec("grounded", epsilon=0.1), ["11"], None)
    assert verifier == GroundedArithmetic(0.1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tom has 6 + 5 = 11 apples.\nThe answer is 11.", True),
        ("Tom has 6 + 5 = 11 apples. The answer is 11 apples.", True),
        ("6 + 5 = 12\nThe answer is 12.", False),
        ("The answer is 11.", True),  # the grade is the outcome: no shown work needed
        ("The answer is 10.\nNo, the answer is 11.", True),  # the last stated answer
        ("Tom has 6 apples and 5 more.", False),  # no answer stated
        (None, False),
    ],
)
def test_grading_extracts_the_last_stated_answer(text, expected):
    task = get_task("word_sums")
    answer = None if text is None else extract_answer(text)
    assert task.grade(answer, "11") is expected


def test_numbers_skip_digits_inside_words():
    assert numbers_in("6 apples, 1.5 kg, x2, 3rd, and 11.") == [6, 1.5, 11]


@pytest.mark.parametrize(
    ("before", "line", "expected"),
    [
        ("", "Tom has 6 + 5 = 11 apples.\n", True),
        ("Tom has 6 + 5 = 11 apples.\n", "The answer is 11.", True),
        ("", "Tom has 6 - 5 = 1 apple. The answer is 1.", True),  # wrong operation, right claim
        ("", "Let's think step by step.\n", True),  # no numbers
        ("", "Tom has 6 apples.\n", True),  # restates the problem
        ("", "Tom has 6 + 5 = 12 apples.\n", False),  # a wrong claim
        ("", "He has 16 apples now.\n", False),  # an ungrounded number
        ("", "The answer is 11.", False),  # an answer that is not derived
        ("", "The answer is 6.", False),  # a problem number is not an answer
        ("6 + 5 = 12\n", "The answer is 12.", False),  # wrong claims derive nothing
        ("", "6 + 5 = 11, so the answer is 11 + 1 = 12.", False),  # 1 is ungrounded
    ],
)
def test_line_is_grounded(before, line, expected):
    assert line_is_grounded(PROBLEM, before, line) is expected


def test_grounded_verifier_scores_each_latest_line():
    texts = [
        "Tom has 6 + 5 = 11 apples.\n",
        "Tom has 6 + 5 = 11 apples.\nThe answer is 11.",
        "Tom has 6 + 5 = 11 apples.\nThe answer is 12.",
        "Tom has 6 apples.",  # finished without an answer
        "Tom has 6 apples.\n",  # the same line, unfinished
    ]
    steps = [
        "Tom has 6 + 5 = 11 apples.\n",
        "The answer is 11.",
        "The answer is 12.",
        "Tom has 6 apples.",
        "Tom has 6 apples.\n",
    ]
    batch = Candidates(
        prompts=[PROBLEM] * len(texts),
        texts=texts,
        last_steps=steps,
        finished=np.asarray([False, True, True, True, False]),
        groups=np.zeros(len(texts), np.int64),
        rows=np.arange(len(texts)),
    )
    np.testing.assert_allclose(GroundedArithmetic(0.05)(batch), [0.95, 0.95, 0.05, 0.05, 0.95])


def test_epsilon_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 0.5\), got 0.5"):
        GroundedArithmetic(0.5)


def _task_signal():
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "task_signal.py"
    spec = importlib.util.spec_from_file_location("task_signal", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_signal_report_computes_pass_at_k_with_standard_errors():
    records = [
        {"reference": "11", "candidates": ["11", "3", None, "11"], "correct": True},
        {"reference": "9", "candidates": ["5", "5", "5", "5"], "correct": False},
    ]
    for record in records:
        record["scores"] = [-0.1, -3.0, -3.0, -0.1] if record["correct"] else [-3.0] * 4
    report = _task_signal().signal_report(records, get_task("word_sums").grade, 4)
    means = {k: v["mean"] for k, v in report["pass_at_k"].items()}
    assert means == pytest.approx({"1": 0.25, "2": 5 / 12, "4": 0.5})
    assert report["pass_at_k"]["1"]["se"] == pytest.approx(0.25)
    assert report["best_of_n_accuracy"]["mean"] == 0.5
    assert report["mean_log_reward"] == pytest.approx({"correct": -0.1, "wrong": -3.0})
    assert report["has_signal"] is True  # 0.05 <= 0.25 <= 0.5 and 0.5 >= 2 * 0.25


def test_signal_report_needs_every_sample():
    records = [{"reference": "1", "candidates": ["1"], "correct": True, "scores": [0.0]}]
    with pytest.raises(ValueError, match="every record needs 4 candidates"):
        _task_signal().signal_report(records, get_task("word_sums").grade, 4)
