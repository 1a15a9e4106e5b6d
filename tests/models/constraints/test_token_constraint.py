"""Token masks from byte automata: which tokens each state allows, end-of-sequence only in
accepting states, the last token must land in an accepting state, special tokens never."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ppl.models.constraints.automata import regex
from ppl.models.constraints.token_constraint import lift, unconstrained

# tokens: 0 "a", 1 "b", 2 "ab", 3 "" (special), 4 "" (end of sequence)
TOKEN_BYTES = [b"a", b"b", b"ab", b"", b""]
EOS = 4


def test_allowed_tokens_follow_the_automaton():
    automaton = regex("a+b")
    constraint = lift(automaton, TOKEN_BYTES, [EOS])
    start = jnp.zeros(1, jnp.int32)
    allowed, next_states = constraint.allowed(start, jnp.full(1, 5))
    # from the start: "a" and "ab" can begin a match, "b" cannot, specials never, EOS not yet
    np.testing.assert_array_equal(np.asarray(allowed[0]), [True, False, True, False, False])
    after_ab = next_states[0, 2]
    allowed, _ = constraint.allowed(after_ab[None], jnp.full(1, 5))
    np.testing.assert_array_equal(np.asarray(allowed[0]), [False, False, False, False, True])


def test_the_last_token_must_complete_a_match():
    constraint = lift(regex("a+b"), TOKEN_BYTES, [EOS])
    allowed, _ = constraint.allowed(jnp.zeros(1, jnp.int32), jnp.ones(1, jnp.int32))
    np.testing.assert_array_equal(np.asarray(allowed[0]), [False, False, True, False, False])


def test_unconstrained_allows_everything():
    constraint = unconstrained(len(TOKEN_BYTES), [EOS])
    allowed, _ = constraint.allowed(jnp.zeros(3, jnp.int32), jnp.asarray([4, 1, 2]))
    assert bool(allowed.all())


def test_tokens_that_cannot_finish_in_time_are_masked():
    # "aab" needs 2 tokens from the start ("a" then "ab"); "ab" alone needs 1
    constraint = lift(regex("aab|ab"), TOKEN_BYTES, [EOS])
    start = jnp.zeros(1, jnp.int32)
    np.testing.assert_array_equal(np.asarray(constraint.distance)[0], 1)
    two_left, _ = constraint.allowed(start, jnp.full(1, 2))
    np.testing.assert_array_equal(np.asarray(two_left[0]), [True, False, True, False, False])
    one_left, _ = constraint.allowed(start, jnp.full(1, 1))
    np.testing.assert_array_equal(np.asarray(one_left[0]), [False, False, True, False, False])


def test_distances_match_brute_force_search():
    import itertools

    automaton = regex("(ab|ba)a?b{2}")
    constraint = lift(automaton, TOKEN_BYTES, [EOS])
    words = [b"a", b"b", b"ab"]
    for state in range(automaton.accepting.shape[0]):
        best = None
        for length in range(0, 6):
            for combo in itertools.product(words, repeat=length):
                if automaton.accepting[automaton.run(b"".join(combo), state)]:
                    best = length
                    break
            if best is not None:
                break
        expected = best if best is not None else None
        got = int(np.asarray(constraint.distance)[state])
        if expected is None:
            assert got > 100
        else:
            assert got == expected, (state, got, expected)
