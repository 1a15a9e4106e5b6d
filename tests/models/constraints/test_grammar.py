"""Lark grammars as sequence potentials: the contract, a brute-force prefix oracle, tight
examples, agreement with `json.loads`, UTF-8 handling and grammars Lark cannot build."""

from __future__ import annotations

import functools
import itertools
import json
import time

import numpy as np
import pytest

from ppl.models.constraints.grammar import ARITHMETIC, JSON, LarkGrammar
from ppl.models.constraints.sequence_potential import check_contract

ALPHABET = b"1+()"


@functools.cache
def grammar(name: str) -> LarkGrammar:
    return LarkGrammar({"arithmetic": ARITHMETIC, "json": JSON}[name])


def strings(alphabet: bytes, max_length: int):
    for length in range(max_length + 1):
        for letters in itertools.product(alphabet, repeat=length):
            yield bytes(letters)


def is_sum(text: bytes) -> bool:
    """An independent recognizer for ARITHMETIC over b"1+()": sum := term ("+" term)*,
    term := "1"+ | "(" sum ")"."""

    def term(i: int) -> int | None:
        if text[i : i + 1] == b"1":
            while text[i : i + 1] == b"1":
                i += 1
            return i
        if text[i : i + 1] == b"(":
            end = sum_(i + 1)
            return end + 1 if end is not None and text[end : end + 1] == b")" else None
        return None

    def sum_(i: int) -> int | None:
        end = term(i)
        while end is not None and text[end : end + 1] == b"+":
            end = term(end + 1)
        return end

    return sum_(0) == len(text)


def test_arithmetic_contract_is_fast():
    start = time.perf_counter()
    assert check_contract(grammar("arithmetic"), ALPHABET, 5) == []
    assert check_contract(grammar("arithmetic"), b"1-*/( )", 3) == []
    assert time.perf_counter() - start < 5.0


def test_arithmetic_complete_matches_a_recognizer():
    for text in strings(ALPHABET, 6):
        assert (grammar("arithmetic").complete(text) == 0.0) == is_sum(text), text


def test_arithmetic_prefix_matches_brute_force():
    """A prefix of a sentence is alive; a string of up to 3 bytes is alive exactly when it
    extends to a sentence of up to 7 bytes (the deepest, "(((", needs 4 more)."""
    sentences = [text for text in strings(ALPHABET, 7) if is_sum(text)]
    prefixes = {s[:i] for s in sentences for i in range(len(s) + 1)}
    potential = grammar("arithmetic")
    for text in strings(ALPHABET, 5):
        alive = potential.prefix(text) == 0.0
        if text in prefixes:
            assert alive, text
        elif len(text) <= 3:
            assert not alive, text


@pytest.mark.parametrize(
    "text", ["1+)", ")", "+", "()", "1(", "(+", "1)", "(1))", "1 1", "1++", "(1+)", "1*/2", "2 (3)"]
)
def test_arithmetic_dead_prefixes(text):
    assert grammar("arithmetic").prefix(text.encode()) == -np.inf


@pytest.mark.parametrize("text", ["", "(1+", "(", "12", "1 + ( 2 *", "((3) / 4", "1 ", "7-"])
def test_arithmetic_live_prefixes(text):
    assert grammar("arithmetic").prefix(text.encode()) == 0.0


JSON_ALIVE = [
    '{"a": tru',
    '{"a": "b',
    '{"a": "b\\',
    '{"a": "\\u00',
    "[1, 2",
    '{"a": [1, {"b": nu',
    "-",
    "1e",
    "1.",
    "0.5E+",
    '{"a": 1,',
    '{"a": 1, ',
    "  [ ",
    '{"é',
    "[]",
]
JSON_DEAD = [
    '{"a": trux',
    '{"a" 1',
    "[1,]",
    "01",
    '{"a": 1} x',
    '"\\x',
    '"\\u00g',
    "{1",
    "[}",
    "1.a",
    "tx",
    "[1 2",
    '{"a": 1,,',
    '"a\tb',  # raw control characters are not allowed in strings
    "--1",
]


@pytest.mark.parametrize("text", JSON_ALIVE)
def test_json_live_prefixes(text):
    assert grammar("json").prefix(text.encode()) == 0.0


@pytest.mark.parametrize("text", JSON_DEAD)
def test_json_dead_prefixes(text):
    assert grammar("json").prefix(text.encode()) == -np.inf


def strict_json(text: str) -> bool:
    def reject(constant):
        raise ValueError(constant)

    try:
        json.loads(text, parse_constant=reject)
    except ValueError:  # json.JSONDecodeError included
        return False
    return True


JSON_TEXTS = [
    *JSON_ALIVE,
    *JSON_DEAD,
    "{}",
    "[]",
    '""',
    "0",
    "-0",
    "-0.0e-0",
    "1E400",
    "true",
    "null",
    " \t\n\r[ 1 , 2 ]\n",
    '{"a": {"b": [true, false, null, "x\\"y\\\\z\\/\\b\\f\\n\\r\\t\\u00E9\\ud83d"]}}',
    '{"a": 1, "a": 2}',
    '"é 😀 \x7f"',
    '"\x00"',
    "[1,2,]",
    "NaN",
    "Infinity",
    "-Infinity",
    ".5",
    "+1",
    "1 2",
    "[",
    "tru",
    "True",
    "'a'",
    '{"a"}',
    "",
    " ",
]


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_json_complete_agrees_with_json_loads(text):
    assert (grammar("json").complete(text.encode()) == 0.0) == strict_json(text), text


DOCUMENTS = [
    {"name": "café ☕ 😀", "values": [1, -2.5, 3e10, 0], "nested": {"ok": True, "no": None}},
    [[], {}, "", '\\"\n\t\u0001', [[[1]]]],
    {"a": {"b": {"c": [False, {"d": "e"}]}}},
]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_every_prefix_of_a_json_document_is_alive(indent, ensure_ascii):
    potential = grammar("json")
    for document in DOCUMENTS:
        data = json.dumps(document, indent=indent, ensure_ascii=ensure_ascii).encode()
        assert potential.complete(data) == 0.0
        for end in range(len(data) + 1):  # ends inside a multibyte character included
            assert potential.prefix(data[:end]) == 0.0, data[:end]


def test_json_contract_on_a_small_alphabet():
    start = time.perf_counter()
    assert check_contract(grammar("json"), b'[1,"]', 5) == []
    assert check_contract(grammar("json"), b'{}":1 ', 3) == []
    assert time.perf_counter() - start < 5.0


def test_utf8():
    potential = grammar("json")
    snowman = '"☃"'.encode()
    assert potential.prefix(snowman[:2]) == 0.0  # inside the character
    assert potential.complete(snowman[:2]) == -np.inf
    assert potential.complete(snowman) == 0.0
    assert potential.prefix(b'"\xff') == -np.inf  # never UTF-8
    assert potential.prefix(b'"\xe2\x98') == 0.0
    assert potential.prefix(b'"\xe2(') == -np.inf


def test_ignored_text_and_keywords():
    grammar_text = r"""
    start: stmt+
    stmt: "if" NAME ":" NAME ";" | NAME "=" INT ";"
    NAME: /[a-z]+/
    INT: /[0-9]+/
    COMMENT: /#[^\n]*\n/
    %ignore COMMENT
    %ignore /[ \n]+/
    """
    potential = LarkGrammar(grammar_text)
    assert potential.complete(b"if x: y; z = 1; # done\n") == 0.0
    assert potential.prefix(b"x = 1; # note: ) ;") == 0.0  # inside a comment
    assert potential.prefix(b"x = 1; # note\n )") == -np.inf
    assert potential.prefix(b"i") == 0.0
    assert potential.prefix(b"if x") == 0.0
    assert potential.prefix(b"if 1") == -np.inf
    assert potential.prefix(b"x = y") == -np.inf
    assert check_contract(potential, b"if x=1;", 3) == []


def test_lark_escaped_string_is_read_without_its_lookbehind():
    potential = LarkGrammar('%import common.ESCAPED_STRING\nstart: "[" ESCAPED_STRING "]"')
    data = b'["a\\"b\\\\"]'
    assert potential.complete(data) == 0.0
    assert all(potential.prefix(data[:end]) == 0.0 for end in range(len(data) + 1))
    assert potential.prefix(b'["a" x') == -np.inf
    assert potential.prefix(b'["a"]]') == -np.inf


def test_unreadable_terminal_regexes_never_kill_a_prefix():
    """interegular cannot read a lookbehind: such a terminal lets every prefix through, which
    over-approximates but stays sound."""
    potential = LarkGrammar(r'start: "<" WORD ">"' + "\n" + r"WORD: /[a-z]+(?<!q)/")
    assert potential._automata["WORD"].fsm is None
    data = b"<abc>"
    assert potential.complete(data) == 0.0
    assert all(potential.prefix(data[:end]) == 0.0 for end in range(len(data) + 1))
    assert potential.prefix(b"<q> x") == 0.0  # dead in fact, but WORD could be anything
    assert potential.prefix(b">") == -np.inf
    assert potential.complete(b"<aq>") == -np.inf


def test_another_start_rule():
    potential = LarkGrammar(ARITHMETIC, start="product")
    assert potential.complete(b"2*(1+1)") == 0.0
    assert potential.complete(b"1+1") == -np.inf
    assert potential.prefix(b"1+") == -np.inf


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('start: a | b\na: "x"\nb: "x"', "GrammarError: Reduce/Reduce collision"),
        ("start: (", "GrammarError"),
        ("start: missing", "not defined"),
    ],
)
def test_grammars_lark_cannot_build_are_errors(text, message):
    with pytest.raises(ValueError, match=f"LALR parser.*{message}"):
        LarkGrammar(text)
