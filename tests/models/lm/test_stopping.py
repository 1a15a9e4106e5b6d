"""Stop-string automata against brute-force substring search on decoded text."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.lm.stopping import advance, build_stop_automata, matched

TOKEN_BYTES = [b"a", b"b", b"\n", b"\n\n", b"a\n", b"\nb", b"ab", b"", b"<|eos|>", b"aba"]


def first_stop(tokens: list[int], stops: list[str]) -> int | None:
    """Index of the token after which some stop string first appears (brute force)."""
    text = b""
    for i, t in enumerate(tokens):
        text += TOKEN_BYTES[t]
        if any(s.encode() in text for s in stops):
            return i
    return None


@pytest.mark.parametrize("stops", [["\n\n"], ["ab"], ["aba", "\n\n"], ["abab"], ["b\nb"]])
def test_automata_agree_with_brute_force(stops):
    automata = build_stop_automata(stops, TOKEN_BYTES)
    rng = np.random.default_rng(0)
    sequences = rng.integers(0, len(TOKEN_BYTES), size=(500, 12))
    states = jnp.zeros((500, len(stops)), jnp.int32)
    first = np.full(500, -1)
    for step in range(12):
        states = advance(automata, states, jnp.asarray(sequences[:, step]))
        hit = np.asarray(matched(automata, states))
        first = np.where((first < 0) & hit, step, first)
    for row in range(500):
        expected = first_stop(sequences[row].tolist(), stops)
        assert first[row] == (-1 if expected is None else expected), sequences[row]


def test_no_stop_strings_never_match():
    automata = build_stop_automata([], TOKEN_BYTES)
    states = advance(automata, jnp.zeros((3, 0), jnp.int32), jnp.asarray([0, 1, 2]))
    assert not np.asarray(matched(automata, states)).any()


def test_empty_stop_string_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        build_stop_automata([""], TOKEN_BYTES)
