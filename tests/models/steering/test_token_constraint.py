"""Token masks from byte automata: which tokens each state allows, end-of-sequence only in
accepting states, the last token must land in an accepting state, special tokens never."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from models.steering.token_constraint import lift, unconstrained
from ppl.automata import regex

# tokens: 0 "a", 1 "b", 2 "ab", 3 "" (special), 4 "" (end of sequence)
TOKEN_BYTES = [b"a", b"b", b"ab", b"", b""]
EOS = 4


def test_allowed_tokens_follow_the_automaton():
    automaton = regex("a+b")
    constraint = lift(automaton, TOKEN_BYTES, [EOS])
    start = jnp.zeros(1, jnp.int32)
    allowed, next_states = constraint.allowed(start, jnp.zeros(1, bool))
    # from the start: "a" and "ab" can begin a match, "b" cannot, specials never, EOS not yet
    np.testing.assert_array_equal(np.asarray(allowed[0]), [True, False, True, False, False])
    after_ab = next_states[0, 2]
    allowed, _ = constraint.allowed(after_ab[None], jnp.zeros(1, bool))
    np.testing.assert_array_equal(np.asarray(allowed[0]), [False, False, False, False, True])


def test_the_last_token_must_complete_a_match():
    constraint = lift(regex("a+b"), TOKEN_BYTES, [EOS])
    allowed, _ = constraint.allowed(jnp.zeros(1, jnp.int32), jnp.ones(1, bool))
    np.testing.assert_array_equal(np.asarray(allowed[0]), [False, False, True, False, False])


def test_unconstrained_allows_everything():
    constraint = unconstrained(len(TOKEN_BYTES), [EOS])
    allowed, _ = constraint.allowed(jnp.zeros(3, jnp.int32), jnp.asarray([False, True, False]))
    assert bool(allowed.all())
