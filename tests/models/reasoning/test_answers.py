"""Answer extraction and normalisation on a table of varied strings, answer matching and ids,
and arithmetic claims with their exact verdicts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ppl.models.reasoning.answers import (
    ArithmeticCheck,
    answer_ids,
    answers_match,
    arithmetic_claims,
    check_arithmetic,
    extract_answer,
    normalize_answer,
)

EXTRACTIONS = [
    ("The answer is 42.", "42"),
    ("the answer is 42", "42"),
    ("THE FINAL ANSWER IS 7", "7"),
    ("So the final answer is $\\boxed{\\frac{1}{2}}$.", "1/2"),
    ("Therefore, the final answer is: $\\boxed{18}$. I hope it is correct.", "18"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "(\\sqrt{3})/2"),
    ("\\boxed{\\dfrac{x+1}{2}}", "(x+1)/2"),
    ("\\boxed{{5}}", "5"),  # nested braces
    ("\\boxed{\\text{(B)}}", "(B)"),
    ("\\boxed{5\\text{ cm}}", "5"),
    ("\\boxed{90^\\circ}", "90"),
    ("Answer: **1,000**", "1000"),
    ("**Answer:** 12", "12"),
    ("The answer is $12.50.", "12.5"),
    ("The answer is $1,234,567.", "1234567"),
    ("the answer is 12 apples", "12"),
    ("The answer is $\\frac{3}{4}$ cups of flour.", "3/4"),
    ("The answer is 2/4.", "1/2"),
    ("The answer is 6/3", "2"),
    ("The answer is +3.0", "3"),
    ("The answer is -0", "0"),
    ("The answer is -0.0", "0"),
    ("The answer is 0.50", "0.5"),
    ("The answer is .5", "0.5"),
    ("The answer is -12.", "-12"),
    ("The answer is 50\\%", "50"),
    ("The answer is x = 5.", "5"),
    ("The answer is 3 x 4 = 12", "12"),
    ("The answer is Paris.", "Paris"),
    ("The answer is 17, which is prime.", "17"),
    ("Janet makes 9 * 2 = 18 dollars.\n#### 18", "18"),
    # the last answer wins, whatever its form
    ("The answer is 3. Wait, recheck: the answer is 4.", "4"),
    ("\\boxed{1} ... so the answer is 2", "2"),
    ("The answer is 2 ... no: \\boxed{3}", "3"),
    # the last phrase is not an answer, so an earlier one is used
    ("The answer is 8. Why the answer is not obvious is left to the reader.", "8"),
    # no answer
    ("I think it is 42.", None),
    ("The answer is", None),
    ("The answer is not obvious.", None),
    ("\\boxed{}", None),
    ("\\boxed{5", None),  # unbalanced
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACTIONS)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


NORMALIZATIONS = [
    (" 42 ", "42"),
    ("$42$", "42"),
    ("\\$42", "42"),
    ("1,000", "1000"),
    ("1,000,000.50", "1000000.5"),
    ("+7", "7"),
    ("3.0", "3"),
    ("-0", "0"),
    ("0.50", "0.5"),
    ("100", "100"),
    ("1e3", "1e3"),  # not a plain number: kept as text
    ("1,2", "1,2"),  # not a thousands separator: kept as text
    ("\\frac{1}{2}", "1/2"),
    ("\\frac12", "1/2"),
    ("\\tfrac{-2}{4}", "-1/2"),
    ("\\frac{1}{0}", "1/0"),
    ("\\text{Paris}", "Paris"),
    ("\\mathrm{m}", "m"),
    ("\\left( 1, 2 \\right)", "( 1, 2 )"),
    ("x =", "x ="),
    ("  two   words ", "two words"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZATIONS)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_answers_match():
    assert answers_match("1,000", "1000")
    assert answers_match("0.5", "\\frac{1}{2}")
    assert answers_match("2/4", "0.50")
    assert answers_match("$3.0$", "3")
    assert not answers_match("3", "4")
    assert not answers_match("0.33", "1/3")  # exact values only
    assert not answers_match(None, None)
    assert not answers_match("3", None)
    assert not answers_match("", "")
    assert not answers_match("Paris", "paris")  # case is kept


def test_answer_ids():
    ids, distinct = answer_ids(["1/2", "0.5", None, "3", " 3.0 ", "", "x", "\\boxed{3}"])
    np.testing.assert_array_equal(ids, [0, 0, -1, 1, 1, -1, 2, 1])
    assert distinct == ["1/2", "3", "x"]
    ids, distinct = answer_ids([None, None])
    np.testing.assert_array_equal(ids, [-1, -1])
    assert distinct == []
    assert answer_ids([])[0].shape == (0,)


CLAIMS = [
    # (text, [(left, op, right, result, correct)])
    ("2 + 3 = 5", [(2, "+", 3, 5, True)]),
    ("2+3=6", [(2, "+", 3, 6, False)]),
    ("12 - 15 = -3", [(12, "-", 15, -3, True)]),
    ("5 - -3 = 8", [(5, "-", -3, 8, True)]),
    ("-4 * 2 = -8", [(-4, "*", 2, -8, True)]),
    ("3 x 4 = 12 and 3 × 4 = 13", [(3, "*", 4, 12, True), (3, "*", 4, 13, False)]),
    ("$3 \\times 4 = 12$", [(3, "*", 4, 12, True)]),
    ("She pays $5 * 3 = $15.", [(5, "*", 3, 15, True)]),
    ("1,200 x 3 = 3,600", [(1200, "*", 3, 3600, True)]),
    ("7 / 2 = 3.5", [(7, "/", 2, Fraction(7, 2), True)]),
    ("7 / 2 = 3", [(7, "/", 2, 3, False)]),  # integers: exact
    ("7 / 0 = 0", [(7, "/", 0, 0, False)]),  # division by zero is never right
    ("0.1 + 0.2 = 0.3", [(Fraction(1, 10), "+", Fraction(2, 10), Fraction(3, 10), True)]),
    ("10 / 3 = 3.333333", [(10, "/", 3, Fraction("3.333333"), True)]),  # rel. error 1e-7
    ("10 / 3 = 3.33", [(10, "/", 3, Fraction("3.33"), False)]),  # rel. error 1e-3
    ("1.5 * 1.5 = 2.25", [(Fraction(3, 2), "*", Fraction(3, 2), Fraction(9, 4), True)]),
    # chains are not binary claims; the binary tail of one is
    ("2 + 3 + 4 = 9", []),
    ("2 * 4 = 5 + 3", []),
    ("2 + 3 = 5 + 1 = 6", [(5, "+", 1, 6, True)]),
    ("2^3 * 2 = 16", []),
    # not arithmetic claims
    ("x - 3 = 2", []),
    ("a-3=2", []),
    ("On 2024-01-15 we met.", []),
    ("no numbers here", []),
]


@pytest.mark.parametrize(("text", "expected"), CLAIMS)
def test_arithmetic_claims(text, expected):
    claims = arithmetic_claims(text)
    found = [(c.left, c.operator, c.right, c.result, c.correct) for c in claims]
    assert found == [
        (Fraction(a), op, Fraction(b), Fraction(c), ok) for a, op, b, c, ok in expected
    ]


def test_check_arithmetic_counts():
    step = "First 3 * 4 = 12. Then 12 + 5 = 18. Finally 18 / 2 = 9."
    assert check_arithmetic(step) == ArithmeticCheck(num_claims=3, num_correct=2)
    assert check_arithmetic("no arithmetic") == ArithmeticCheck(0, 0)
    assert check_arithmetic("10 / 3 = 3.33", relative_tolerance=1e-2) == ArithmeticCheck(1, 1)
