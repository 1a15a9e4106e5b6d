"""Byte-automaton potentials: their languages, the prefix/complete contract, intersection,
and the lift to token tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ppl.models.constraints.automata import (
    forbidden_bytes,
    intersect,
    max_word_length,
    regex,
    token_table,
)
from ppl.models.constraints.sequence_potential import check_contract

ALPHABET = b"ae x"


def strings(max_length):
    for length in range(max_length + 1):
        for letters in itertools.product(ALPHABET, repeat=length):
            yield bytes(letters)


def short_words(data: bytes, limit: int) -> bool:
    return all(len(word) <= limit for word in data.replace(b" ", b"\n").split())


AUTOMATA = {
    "lipogram": (forbidden_bytes(b"eE"), lambda d: b"e" not in d),
    "short words": (max_word_length(2), lambda d: short_words(d, 2)),
    "both": (
        intersect(forbidden_bytes(b"e"), max_word_length(2)),
        lambda d: b"e" not in d and short_words(d, 2),
    ),
}


@pytest.mark.parametrize("name", sorted(AUTOMATA))
def test_language_matches_its_definition(name):
    automaton, accepts = AUTOMATA[name]
    for data in strings(5):
        assert (automaton.complete(data) == 0.0) == accepts(data), data


@pytest.mark.parametrize("name", sorted(AUTOMATA))
def test_the_contract_holds(name):
    assert check_contract(AUTOMATA[name][0], ALPHABET, 5) == []


def test_the_checker_catches_a_broken_potential():
    class Broken:  # kills "e" as a prefix but accepts "ea" as complete
        def prefix(self, data):
            return -np.inf if data == b"e" else 0.0

        def complete(self, data):
            return 0.0

    violations = check_contract(Broken(), ALPHABET, 3)
    assert any("dead but" in v for v in violations)
    assert any("complete but its prefix" in v for v in violations)


def test_token_table_walks_each_token():
    automaton = max_word_length(3)
    tokens = [b"a", b"ab", b" ", b"abc d", b""]
    table = token_table(automaton, tokens)
    for state in range(automaton.accepting.shape[0]):
        for v, data in enumerate(tokens):
            assert table[state, v] == automaton.run(data, state)
    assert table[0, 3] == 1  # "abc d" ends inside the one-letter word "d"
    assert np.all(table[:, 4] == np.arange(automaton.accepting.shape[0]))  # no bytes: no move


def test_bad_limit():
    with pytest.raises(ValueError, match="limit"):
        max_word_length(0)


PATTERNS = [r"a[ex]?", r"(ax|e)+ ?", r"[ae]{2,3}x", r"x*", r"a(e|x a)*"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_matches_python_re_and_prunes_exactly(pattern):
    import re

    automaton = regex(pattern)
    compiled = re.compile(pattern)
    matching = [d for d in strings(6) if compiled.fullmatch(d.decode())]
    for data in strings(4):
        assert (automaton.complete(data) == 0.0) == bool(compiled.fullmatch(data.decode()))
        # a live prefix has a matching continuation (within two more bytes for these patterns)
        extendable = any(m.startswith(data) for m in matching)
        assert (automaton.prefix(data) == 0.0) == extendable, (pattern, data)
    assert check_contract(automaton, ALPHABET, 4) == []


def test_regex_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match="matches nothing"):
        regex(r"a[^\s\S]")
