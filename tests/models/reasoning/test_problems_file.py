"""Problems files (GSM8K / MATH500 style JSONL) and math-verify grading."""

from __future__ import annotations

import json

import pytest

from ppl.experiments import cli
from ppl.models.reasoning.problems_file import (
    INSTRUCTION,
    math_verify_grade,
    problems_file_task,
    read_problems,
)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_reads_gsm8k_and_math500_lines(tmp_path):
    path = write(
        tmp_path / "p.jsonl",
        [
            {"question": "Ana has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
            {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "answer": "\\frac{3}{4}"},
            {"problem": "How many primes are below 10?", "answer": 4},
        ],
    )
    problems = read_problems(path)
    assert [p.answer for p in problems] == ["7", "\\frac{3}{4}", "4"]
    assert problems[0].prompt == "Ana has 3 apples and buys 4. How many?" + INSTRUCTION


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "p.jsonl:2: not JSON"),
        ('["a list"]', "p.jsonl:2: each line must be a JSON object"),
        ('{"answer": "1"}', "p.jsonl:2: no question"),
        ('{"question": "Why?"}', "p.jsonl:2: no 'answer'"),
        ('{"question": "Why?", "answer": ""}', "p.jsonl:2: 'answer' must be a non-empty"),
    ],
)
def test_bad_lines_are_named(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", [{"question": "1 + 1?", "answer": "2"}, line])
    with pytest.raises(ValueError, match=message):
        read_problems(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="problems file not found"):
        read_problems(tmp_path / "absent.jsonl")


@pytest.mark.parametrize(
    ("predicted", "reference", "equal"),
    [
        ("0.5", "\\frac{1}{2}", True),
        ("1234", "1,234", True),
        ("1+x^2", "x^2+1", True),
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
        ("(1, 2)", "(1,2)", True),
        ("11", "10", False),
        ("x^2", "x^3", False),
        (None, "1", False),
        ("", "1", False),
    ],
)
def test_math_verify_grades_equal_numbers_and_equivalent_expressions(predicted, reference, equal):
    assert math_verify_grade(predicted, reference) is equal


def test_task_takes_the_first_problems_and_grades_with_math_verify(tmp_path):
    rows = [{"question": f"{i} + 1?", "answer": str(i + 1)} for i in range(3)]
    task = problems_file_task(write(tmp_path / "p.jsonl", rows))
    assert task.name == "file:p.jsonl" and task.grade is math_verify_grade
    assert [p.answer for p in task.make_problems(0, 2)] == ["1", "2"]
    with pytest.raises(ValueError, match="holds 3 problems; asked for 5"):
        task.make_problems(0, 5)


def test_cli_names_a_bad_problems_file(tmp_path, capsys):
    path = write(tmp_path / "p.jsonl", ['{"question": "1 + 1?"}'])
    assert cli.main(["scale", "--problems-file", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "p.jsonl:1: no 'answer'" in capsys.readouterr().err
    code = cli.main(["scale", "--problems-file", str(path), "--task", "word_arithmetic"])
    assert code == 2
    assert "give --task or --problems-file, not both" in capsys.readouterr().err
