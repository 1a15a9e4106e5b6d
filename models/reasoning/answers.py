"""Final answers and arithmetic claims in generated reasoning text.

`extract_answer` finds the final answer ("The answer is N", "the final answer is N",
"Answer: N", `\\boxed{N}`, GSM8K's "#### N"; the last one in the text wins), and
`normalize_answer` puts it in a canonical form so that equal answers compare equal.
`answer_ids` turns a set of answers into the integer ids that `ppl.samplers.selection` votes on.
`check_arithmetic` counts the "a op b = c" claims in a step and how many are right: the
observations of a programmatic process verifier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------------------------
# LaTeX helpers


def _braced(text: str, open_index: int) -> tuple[str, int] | None:
    """The content of the brace group opening at `text[open_index] == "{"` (nested braces
    balanced) and the index just past its closing brace; None if it never closes."""
    depth = 0
    for index in range(open_index, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index], index + 1
    return None


def _unwrap_commands(text: str, commands: Sequence[str]) -> str:
    """Replace every `\\command{X}` by X (nested braces balanced, innermost last)."""
    pattern = re.compile(r"\\(?:" + "|".join(commands) + r")(?![A-Za-z])\s*(?=\{)")
    while (match := pattern.search(text)) is not None:
        group = _braced(text, match.end())
        if group is None:  # unbalanced: drop the command name, keep the rest
            text = text[: match.start()] + text[match.end() :]
            continue
        content, end = group
        text = text[: match.start()] + content + text[end:]
    return text


def _simple(term: str) -> bool:
    return re.fullmatch(r"[+-]?[\w.]+|\\?[A-Za-z]+", term) is not None


def _replace_fractions(text: str) -> str:
    """`\\frac{a}{b}` (and `\\dfrac`, `\\tfrac`, `\\frac12`) -> "a/b"; a part that is not a
    single number or symbol is parenthesised: `\\frac{x+1}{2}` -> "(x+1)/2"."""
    text = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", text)
    text = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\1/\2", text)
    pattern = re.compile(r"\\frac\s*(?=\{)")
    while (match := pattern.search(text)) is not None:
        numerator = _braced(text, match.end())
        if numerator is None:
            break
        rest = numerator[1]
        while rest < len(text) and text[rest].isspace():
            rest += 1
        denominator = _braced(text, rest) if rest < len(text) and text[rest] == "{" else None
        if denominator is None:
            break
        parts = [part.strip() for part in (numerator[0], denominator[0])]
        a, b = (part if _simple(part) else f"({part})" for part in parts)
        text = text[: match.start()] + f"{a}/{b}" + text[denominator[1] :]
    return text


# ---------------------------------------------------------------------------------------------
# Normalisation

_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
_FRACTION = re.compile(r"([+-]?\d+)/([+-]?\d+)")
_DROPPED = (r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\ ", r"\displaystyle")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_LEADING_NUMBER = re.compile(
    r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?(?=\s*(?:(?!x\s*\d)[A-Za-z%]|$))"
)


def _is_number(compact: str) -> bool:
    return any(ch.isdigit() for ch in compact) and _NUMBER.fullmatch(compact) is not None


def _canonical_number(compact: str) -> str:
    """ "1,000" -> "1000", "+3.0" -> "3", "-0" -> "0", "0.50" -> "0.5", ".5" -> "0.5"."""
    value = Decimal(compact.replace(",", ""))
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _canonical_fraction(numerator: str, denominator: str) -> str | None:
    """Lowest terms, sign on the numerator, "p/1" -> "p"; None for a zero denominator."""
    if int(denominator) == 0:
        return None
    value = Fraction(int(numerator), int(denominator))
    return str(value.numerator) if value.denominator == 1 else f"{value}"


def normalize_answer(s: str) -> str:
    """Canonical form of an answer string, so that equal answers compare equal as strings.

    In order: unwrap `\\boxed{}`/`\\fbox{}` and `\\text{}`-like commands (`\\text`,
    `\\textbf`, `\\mathrm`, `\\mathbf`, `\\mbox`, ...) to their content; `\\frac{a}{b}` ->
    "a/b"; drop `$`, `\\left`/`\\right`, LaTeX spacing, `**` (markdown bold), degree signs and
    `%`; strip whitespace, braces around the whole answer and trailing periods; keep the
    right-hand side of the last "=" ("x = 5" -> "5", "3 x 4 = 12" -> "12"); a number followed
    only by words ("12 apples", "5 cm") -> the number. A number is then written canonically:
    no thousands separators or leading "+", "3.0" -> "3", "-0" -> "0", "0.50" -> "0.5"; an
    integer fraction is reduced to lowest terms ("2/4" -> "1/2", "6/3" -> "2"). Anything else
    keeps its text, with runs of whitespace collapsed to one space. Case is kept.
    """
    text = s.strip()
    text = _unwrap_commands(text, ("boxed", "fbox"))
    text = _unwrap_commands(
        text, ("text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mathit", "mbox")
    )
    text = _replace_fractions(text)
    text = _DEGREES.sub("", text)
    for token in _DROPPED:
        text = text.replace(token, " " if token == r"\ " else "")
    text = text.replace(r"\$", "").replace("$", "").replace(r"\%", "").replace("%", "")
    text = text.replace("**", "")
    text = re.sub(r"\s+", " ", text).strip()
    while text.startswith("{") and (group := _braced(text, 0)) is not None and not text[group[1] :]:
        text = group[0].strip()  # "{5}" -> "5"
    text = text.rstrip(". ").strip()
    if "=" in text and text.rsplit("=", 1)[1].strip():
        text = text.rsplit("=", 1)[1].strip()
    if (match := re.fullmatch(r"(\S+)\s+[A-Za-z][A-Za-z ]*", text)) is not None:
        if _is_number(match.group(1)) or _FRACTION.fullmatch(match.group(1)):
            text = match.group(1)
    compact = text.replace(" ", "")
    if _is_number(compact):
        return _canonical_number(compact)
    if (match := _FRACTION.fullmatch(compact)) is not None:
        reduced = _canonical_fraction(match.group(1), match.group(2))
        return compact if reduced is None else reduced
    return text


def _equivalence_key(normalized: str) -> str:
    """Numbers compare by value ("0.5" == "1/2"), everything else by its normalised text."""
    if _is_number(normalized) or _FRACTION.fullmatch(normalized):
        value = Fraction(normalized) if "/" in normalized else Fraction(Decimal(normalized))
        return str(value)
    return normalized


# ---------------------------------------------------------------------------------------------
# Extraction

_ANSWER_PHRASE = re.compile(r"\banswer\s*(?:is\b|:)\s*:?", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*(?=\{)")
_GSM8K = re.compile(r"^####\s*(.+)$", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?;](?:\s|$)|,\s")


def _phrase_answer(rest: str) -> str | None:
    """The answer written after "answer is": inline math `$...$` if it starts there, else the
    text up to the end of the line or sentence; a leading number followed only by words
    ("12 apples") is taken alone. Accepted only if it has a digit or is a single word."""
    line = rest.split("\n", 1)[0].strip()
    closing = line.find("$", 1) if line.startswith("$") else -1
    if closing > 1:
        line = line[1:closing]
    else:
        cut = _SENTENCE_END.search(line)
        line = line[: cut.start()] if cut is not None else line
        line = line.replace("**", "").strip()
        if (number := _LEADING_NUMBER.match(line.lstrip("$ "))) is not None:
            line = number.group(0)
    answer = normalize_answer(line)
    if not answer or (not any(ch.isdigit() for ch in answer) and " " in answer):
        return None
    return answer


def extract_answer(text: str) -> str | None:
    """The normalised final answer in `text`, or None.

    Candidates are `\\boxed{...}` (nested braces), "answer is ..." / "answer: ..." (any case,
    "The final answer is" included) and a GSM8K-style line "#### ...". The candidate that
    starts last in the text wins (so "The final answer is $\\boxed{7}$" gives the boxed 7);
    a candidate that is empty or not an answer (see `_phrase_answer`) is skipped.
    """
    candidates: list[tuple[int, str | None]] = []
    for match in _BOXED.finditer(text):
        group = _braced(text, match.end())
        if group is not None:
            candidates.append((match.start(), normalize_answer(group[0]) or None))
    for match in _ANSWER_PHRASE.finditer(text):
        candidates.append((match.start(), _phrase_answer(text[match.end() :])))
    for match in _GSM8K.finditer(text):
        candidates.append((match.start(), normalize_answer(match.group(1)) or None))
    for _, answer in sorted(candidates, key=lambda candidate: candidate[0], reverse=True):
        if answer is not None:
            return answer
    return None


# ---------------------------------------------------------------------------------------------
# Comparison and ids


def answers_match(a: str | None, b: str | None) -> bool:
    """Whether two answers are the same after normalisation; numbers compare by exact value
    ("0.5" == "1/2" == "0.50"). None (no answer) and empty answers never match anything."""
    if a is None or b is None:
        return False
    a, b = normalize_answer(a), normalize_answer(b)
    return bool(a) and bool(b) and _equivalence_key(a) == _equivalence_key(b)


def answer_ids(answers: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    """Integer ids [N] for votes: answers that match (`answers_match`) share an id, ids are
    numbered 0, 1, ... in order of first appearance, None or empty answers get -1. Returns
    (ids, distinct) with `distinct[i]` the normalised text of id i's first occurrence."""
    ids = np.full(len(answers), -1, dtype=np.int32)
    distinct: list[str] = []
    index_of_key: dict[str, int] = {}
    for position, answer in enumerate(answers):
        if answer is None:
            continue
        normalized = normalize_answer(answer)
        if not normalized:
            continue
        key = _equivalence_key(normalized)
        if key not in index_of_key:
            index_of_key[key] = len(distinct)
            distinct.append(normalized)
        ids[position] = index_of_key[key]
    return ids, distinct


# ---------------------------------------------------------------------------------------------
# Arithmetic claims


class ArithmeticClaim(NamedTuple):
    """One written claim "left operator right = result" and whether it holds."""

    text: str
    left: Fraction
    operator: str  # one of + - * /
    right: Fraction
    result: Fraction
    correct: bool


class ArithmeticCheck(NamedTuple):
    num_claims: int
    num_correct: int


_OPERAND = r"(-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
_OPERATOR = r"(\+|-|−|\*|/|x|×|÷|·|\\times|\\cdot|\\div)"
_CLAIM = re.compile(
    r"(?<![\w.,$^])" + _OPERAND + r"\s*" + _OPERATOR + r"\s*" + _OPERAND + r"\s*=\s*" + _OPERAND
)
_OPERATORS = {"x": "*", "×": "*", "·": "*", r"\times": "*", r"\cdot": "*", "÷": "/"}
_OPERATORS |= {r"\div": "/", "−": "-"}
_CHAINED_BEFORE = re.compile(r"(?:[-+*/×÷·^−]|(?<![A-Za-z])x|\\times|\\cdot|\\div)\s*$")
_CHAINED_AFTER = re.compile(r"\s*(?:[-+*/x×÷·^−]|\\times|\\cdot|\\div)\s*-?\$?\d")


def _operand(token: str) -> Fraction:
    return Fraction(token.replace("$", "").replace(",", ""))


def arithmetic_claims(text: str, relative_tolerance: float = 1e-6) -> list[ArithmeticClaim]:
    """Every binary claim "a op b = c" in `text`: integers or decimals (thousands separators
    and a leading `$` allowed, negatives as "-3"), operators + - * / x × ÷ · (and `\\times`,
    `\\cdot`, `\\div`), optional spaces. A claim inside a longer chain ("2 + 3 + 4 = 9",
    "2 * 4 = 5 + 3") is not a binary claim and is skipped; in "2 + 3 = 5 + 1 = 6" the claim
    is "5 + 1 = 6". Correctness is decided by `claim_holds`."""
    claims = []
    position = 0
    while (match := _CLAIM.search(text, position)) is not None:
        position = match.end(1)  # claims may overlap: "a + b = c * d = e"
        if _CHAINED_BEFORE.search(
            text, max(0, match.start() - 16), match.start()
        ) or _CHAINED_AFTER.match(text, match.end()):
            continue
        left, right, result = (_operand(match.group(i)) for i in (1, 3, 4))
        operator = _OPERATORS.get(match.group(2), match.group(2))
        integers = all("." not in match.group(i) for i in (1, 3, 4))
        correct = claim_holds(left, operator, right, result, integers, relative_tolerance)
        claims.append(ArithmeticClaim(match.group(0), left, operator, right, result, correct))
    return claims


def claim_holds(
    left: Fraction,
    operator: str,
    right: Fraction,
    result: Fraction,
    exact: bool,
    relative_tolerance: float = 1e-6,
) -> bool:
    """Whether left op right = result: exactly when `exact` (every number written as an
    integer), else |value - result| <= relative_tolerance * max(|value|, |result|), with
    value computed exactly in rationals. Division by zero is never correct."""
    if operator == "+":
        value = left + right
    elif operator == "-":
        value = left - right
    elif operator == "*":
        value = left * right
    elif operator == "/":
        if right == 0:
            return False
        value = left / right
    else:
        raise ValueError(f"unknown operator {operator!r}; expected one of + - * /")
    if exact:
        return value == result
    return abs(value - result) <= relative_tolerance * max(abs(value), abs(result))


def check_arithmetic(text: str, relative_tolerance: float = 1e-6) -> ArithmeticCheck:
    """How many "a op b = c" claims `text` makes and how many of them are right (exact for
    integers, relative tolerance 1e-6 when a number is written as a decimal, so "10 / 3 =
    3.333333" passes and "10 / 3 = 3.33" does not; division by zero is incorrect)."""
    claims = arithmetic_claims(text, relative_tolerance)
    return ArithmeticCheck(len(claims), sum(claim.correct for claim in claims))
