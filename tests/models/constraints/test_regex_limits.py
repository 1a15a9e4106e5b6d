"""Regex compilation: linear time in the automaton's size, a state cap, and parse errors that
name the pattern and the cause (issue 18, items 6 and 7)."""

import re
import time

import pytest

from ppl.models.constraints.automata import MAX_STATES, regex
from ppl.models.constraints.json_schema import schema_automaton


def test_long_repeat_compiles_fast_and_exactly():
    start = time.perf_counter()
    automaton = regex("a{10000}")
    assert time.perf_counter() - start < 10  # was 25.6 s with the quadratic passes
    assert automaton.accepting.shape[0] == 10002
    assert automaton.complete(b"a" * 10000) == 0.0
    assert automaton.complete(b"a" * 9999) == float("-inf")
    assert automaton.prefix(b"a" * 10001) == float("-inf")


def test_too_many_states_is_a_clear_error():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"more than {MAX_STATES} states"):
        regex("a{100000}")
    with pytest.raises(ValueError, match="more than 20000 states"):
        schema_automaton({"type": "string", "minLength": 3000})
    with pytest.raises(ValueError, match="more than 50 states"):
        regex("(a|b)*a(a|b){20}", max_states=50)  # exponential subset construction
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "invalid regex '\\(': missing \\), unterminated subpattern at position 0"),
        ("a{3,1}", "min repeat greater than max repeat at position 2"),
        ("[z-a]", "bad character range z-a at position 1"),
        ("(?<=a)b", "is not supported: lookbacks are not implemented"),
    ],
)
def test_bad_patterns_name_the_cause(pattern, message):
    with pytest.raises(ValueError, match=message):
        regex(pattern)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("abc", "max-word-length needs a whole number of letters, got 'abc'"),
        ("-3", "max-word-length needs a whole number of letters, got '-3'"),
        ("0", "limit must be >= 1, got 0"),
        ("99999999", "max-word-length is at most 10000 letters, got 99999999"),
    ],
)
def test_bad_max_word_length_arguments_name_the_value(argument, message):
    from ppl.models.constraints.sequence_potential import CONSTRAINTS
    from ppl.registry import import_modules

    import_modules("ppl.models.constraints")
    with pytest.raises(ValueError, match=re.escape(message)):
        CONSTRAINTS.get("max-word-length")(argument)
