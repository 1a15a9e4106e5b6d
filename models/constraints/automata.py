"""Byte automata as sequence potentials, and their lifting to a tokenizer's vocabulary.

A constraint on generated text is a deterministic finite automaton over bytes: a transition
table [S, 256], the accepting states [S], start state 0 and a dead state from which no
accepting state can be reached. As a potential (the prefix/complete contract of
`ppl.models.constraints.sequence_potential`) it gives

    prefix(x)   = 0 if x does not lead to the dead state, else -inf
    complete(x) = 0 if x leads to an accepting state, else -inf,

so a prefix weight of -inf means no extension can succeed. `token_table` lifts the automaton to
tokens: entry [s, v] is the state after reading token v's bytes from state s, so a batched
sampler keeps one state per particle and masks the tokens that lead to the dead state.

Built-in automata: `forbidden_bytes` (a lipogram), `max_word_length`, `regex` (through
`interegular`'s regex-to-FSM compiler) and `intersect` (the product of two constraints).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ppl.models.constraints.sequence_potential import CONSTRAINTS

NUM_BYTES = 256


class ByteAutomaton(NamedTuple):
    transitions: np.ndarray  # [S, 256] int32 next state; start state 0
    accepting: np.ndarray  # [S] bool
    dead: int  # the state from which nothing is accepted (absorbing)

    def run(self, data: bytes, state: int = 0) -> int:
        for byte in data:
            state = int(self.transitions[state, byte])
        return state

    def prefix(self, data: bytes) -> float:
        return -np.inf if self.run(data) == self.dead else 0.0

    def complete(self, data: bytes) -> float:
        return 0.0 if self.accepting[self.run(data)] else -np.inf


@CONSTRAINTS.register("forbidden", "text without any of the given characters (a lipogram: eE)")
def _forbidden(characters: str) -> ByteAutomaton:
    return forbidden_bytes(characters.encode())


def forbidden_bytes(forbidden: bytes) -> ByteAutomaton:
    """Text that never contains any byte of `forbidden` (a lipogram for b"eE")."""
    transitions = np.zeros((2, NUM_BYTES), np.int32)
    transitions[0, list(forbidden)] = 1
    transitions[1, :] = 1
    return ByteAutomaton(transitions, np.asarray([True, False]), dead=1)


@CONSTRAINTS.register("max-word-length", "words of at most the given number of letters")
def _max_word_length(limit: str) -> ByteAutomaton:
    return max_word_length(int(limit))


def max_word_length(limit: int, letters: bytes | None = None) -> ByteAutomaton:
    """Text whose words (maximal runs of ASCII letters, or of `letters`) have at most `limit`
    letters. State k <= limit counts the letters of the current word."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    alphabet = letters or bytes(range(65, 91)) + bytes(range(97, 123))
    dead = limit + 1
    transitions = np.zeros((limit + 2, NUM_BYTES), np.int32)  # non-letters reset to 0
    for count in range(limit + 1):
        transitions[count, list(alphabet)] = count + 1
    transitions[dead, :] = dead
    accepting = np.ones(limit + 2, bool)
    accepting[dead] = False
    return ByteAutomaton(transitions, accepting, dead)


def intersect(first: ByteAutomaton, second: ByteAutomaton) -> ByteAutomaton:
    """Text accepted by both: the product automaton, with every pair holding a dead component
    merged into one dead state."""
    s1, s2 = first.accepting.shape[0], second.accepting.shape[0]
    pairs = np.arange(s1 * s2).reshape(s1, s2)
    nxt = pairs[first.transitions[:, None, :], second.transitions[None, :, :]]  # [s1, s2, 256]
    dead_pair = (np.arange(s1)[:, None] == first.dead) | (np.arange(s2)[None, :] == second.dead)
    flat_dead = dead_pair.reshape(-1)
    merged = np.where(flat_dead[nxt.reshape(s1 * s2, NUM_BYTES)], -1, nxt.reshape(-1, 256))
    keep = np.flatnonzero(~flat_dead)  # live pairs, start pair (0, 0) first if live
    index = np.full(s1 * s2, -1, np.int64)
    index[keep] = np.arange(keep.size)
    dead = keep.size
    table = np.where(merged[keep] < 0, dead, index[np.maximum(merged[keep], 0)])
    transitions = np.vstack([table, np.full((1, NUM_BYTES), dead)]).astype(np.int32)
    accepting = np.append(
        (first.accepting[:, None] & second.accepting[None, :]).reshape(-1)[keep], False
    )
    if flat_dead[0]:
        raise ValueError("the start state of an intersected automaton is dead")
    return ByteAutomaton(transitions, accepting, dead)


def token_table(automaton: ByteAutomaton, token_bytes: Sequence[bytes]) -> np.ndarray:
    """[S, V] int32: the state after reading each token's bytes from each state (a token with
    no bytes, such as a special token, leaves the state unchanged)."""
    states = np.arange(automaton.accepting.shape[0])
    table = np.empty((states.size, len(token_bytes)), np.int32)
    for v, data in enumerate(token_bytes):
        current = states.copy()
        for byte in data:
            current = automaton.transitions[current, byte]
        table[:, v] = current
    return table


def regex(pattern: str) -> ByteAutomaton:
    """Text that fully matches the regular expression `pattern` (Python syntax as parsed by
    `interegular`; ASCII patterns, read byte by byte).

    States that cannot reach an accepting state are merged into the dead state, so the prefix
    weight is -inf exactly when no continuation can match.
    """
    import interegular
    from interegular.fsm import anything_else

    fsm = interegular.parse_pattern(pattern).to_fsm().reduce()  # minimal: fewer states
    symbols = [
        fsm.alphabet[chr(b)] if chr(b) in fsm.alphabet else fsm.alphabet[anything_else]
        for b in range(NUM_BYTES)
    ]
    if any(isinstance(c, str) and ord(c) >= 128 for c in fsm.alphabet if c is not anything_else):
        raise ValueError("regex constraints support ASCII patterns only")
    states = sorted(fsm.states)
    # live states: those from which an accepting state is reachable
    live = set(fsm.finals)
    changed = True
    while changed:
        changed = False
        for state in states:
            if state not in live and any(t in live for t in fsm.map.get(state, {}).values()):
                live.add(state)
                changed = True
    if fsm.initial not in live:
        raise ValueError(f"the pattern {pattern!r} matches nothing")
    order = [fsm.initial] + [s for s in states if s in live and s != fsm.initial]
    index = {state: i for i, state in enumerate(order)}
    dead = len(order)
    transitions = np.full((dead + 1, NUM_BYTES), dead, np.int32)
    for state in order:
        moves = fsm.map.get(state, {})
        for byte in range(NUM_BYTES):
            target = moves.get(symbols[byte])
            if target is not None and target in live:
                transitions[index[state], byte] = index[target]
    accepting = np.zeros(dead + 1, bool)
    accepting[[index[s] for s in fsm.finals if s in live]] = True
    return ByteAutomaton(transitions, accepting, dead)


CONSTRAINTS.register("regex", "text that fully matches the given regular expression")(regex)
