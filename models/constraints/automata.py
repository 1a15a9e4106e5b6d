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

import contextlib
import re
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

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
    if not limit.strip().isdigit():
        raise ValueError(f"max-word-length needs a whole number of letters, got {limit!r}")
    if int(limit) > 10_000:
        raise ValueError(f"max-word-length is at most 10000 letters, got {limit}")
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


MAX_STATES = 20_000  # the most states a compiled regex automaton (or any step of it) may have
REDUCE_BELOW = 1_000  # larger automata are not minimised (interegular's reduce is superlinear)


def regex(pattern: str, max_states: int = MAX_STATES) -> ByteAutomaton:
    """Text that fully matches the regular expression `pattern` (Python syntax as parsed by
    `interegular`; ASCII patterns, read byte by byte).

    States that cannot reach an accepting state are merged into the dead state, so the prefix
    weight is -inf exactly when no continuation can match. Compiling takes time linear in the
    number of states S times the alphabet classes K (the liveness pass is one breadth-first
    search backwards from the accepting states); a pattern whose automaton, or any
    intermediate automaton of its construction, has more than `max_states` states raises a
    ValueError instead of growing without bound (a token table costs S x vocabulary entries).
    A pattern that does not parse raises a ValueError naming the cause and its position.
    """
    import interegular
    from interegular.fsm import anything_else

    if not isinstance(pattern, str):
        raise ValueError(f"a regex must be a string, got {type(pattern).__name__}")
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"invalid regex {_shown(pattern)}: {error.msg} at position {error.pos}"
        ) from None
    except (OverflowError, RecursionError) as error:
        raise ValueError(f"invalid regex {_shown(pattern)}: {error}") from None
    try:
        with _bounded_crawl(max_states):
            parsed = interegular.parse_pattern(pattern)
            fsm = parsed.to_fsm()
            if len(fsm.states) <= REDUCE_BELOW:  # minimal: fewer states (Brzozowski's, slow)
                fsm = fsm.reduce()
    except _TooManyStates:
        raise ValueError(
            f"the regex {_shown(pattern)} compiles to an automaton of more than "
            f"{max_states} states (the limit, max_states)"
        ) from None
    except (interegular.InvalidSyntax, interegular.Unsupported) as error:
        cause = str(error) or type(error).__name__
        raise ValueError(f"regex {_shown(pattern)} is not supported: {cause}") from None
    if any(isinstance(c, str) and ord(c) >= 128 for c in fsm.alphabet if c is not anything_else):
        raise ValueError("regex constraints support ASCII patterns only")
    states = sorted(fsm.states)
    live = _live_states(fsm.map, fsm.finals)
    if fsm.initial not in live:
        raise ValueError(f"the pattern {pattern!r} matches nothing")
    order = [fsm.initial] + [s for s in states if s in live and s != fsm.initial]
    index = {state: i for i, state in enumerate(order)}
    dead = len(order)
    keys = sorted(set(fsm.alphabet.values()), key=repr)
    column = {key: k for k, key in enumerate(keys)}
    by_class = np.full((dead + 1, len(keys)), dead, np.int32)  # [S, K] next state per class
    for state in order:
        row = by_class[index[state]]
        for key, target in fsm.map.get(state, {}).items():
            if target in live:
                row[column[key]] = index[target]
    symbols = [
        fsm.alphabet[chr(b)] if chr(b) in fsm.alphabet else fsm.alphabet[anything_else]
        for b in range(NUM_BYTES)
    ]
    transitions = by_class[:, [column[symbol] for symbol in symbols]]
    accepting = np.zeros(dead + 1, bool)
    accepting[[index[s] for s in fsm.finals if s in live]] = True
    return ByteAutomaton(np.ascontiguousarray(transitions), accepting, dead)


def _live_states(moves: Mapping[Any, Mapping[Any, Any]], finals: Iterable[Any]) -> set:
    """The states from which an accepting state is reachable: a breadth-first search from the
    accepting states over the reversed transitions, O(states x alphabet classes)."""
    predecessors: dict[Hashable, list[Hashable]] = {}
    for origin, row in moves.items():
        for target in row.values():
            predecessors.setdefault(target, []).append(origin)
    live = set(finals)
    frontier = list(live)
    while frontier:
        state = frontier.pop()
        for origin in predecessors.get(state, ()):
            if origin not in live:
                live.add(origin)
                frontier.append(origin)
    return live


def _shown(pattern: str, limit: int = 80) -> str:
    text = repr(pattern)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(pattern)} characters)"


class _TooManyStates(Exception):
    pass


_CRAWL_LOCK = threading.Lock()


def _key(state: Any) -> Hashable:
    """A hashable stand-in for an interegular meta-state, equal exactly when the states are
    (its meta-states are sets, frozensets, dicts of int to state, tuples or ints)."""
    if isinstance(state, (set, frozenset)):
        return frozenset(state)
    if isinstance(state, dict):
        return ("dict", frozenset(state.items()))
    return state


@contextlib.contextmanager
def _bounded_crawl(max_states: int) -> Iterator[None]:
    """Run interegular with its state crawler replaced by one that indexes states in a dict
    (its own searches a list, O(S^2)) and stops past `max_states` states. Same FSMs."""
    import interegular.fsm as fsm_module

    def crawl(alphabet: Any, initial: Any, final: Any, follow: Any) -> Any:
        states = [initial]
        seen = {_key(initial): 0}
        finals = set()
        transitions: dict[int, dict] = {}
        i = 0
        while i < len(states):
            state = states[i]
            if final(state):
                finals.add(i)
            transitions[i] = {}
            for transition in alphabet.by_transition:
                try:
                    nxt = follow(state, transition)
                except fsm_module.OblivionError:
                    continue
                key = _key(nxt)
                j = seen.get(key)
                if j is None:
                    j = seen[key] = len(states)
                    states.append(nxt)
                    if j >= max_states:
                        raise _TooManyStates
                transitions[i][transition] = j
            i += 1
        return fsm_module.FSM(
            alphabet=alphabet,
            states=range(len(states)),
            initial=0,
            finals=finals,
            map=transitions,
            __no_validation__=True,
        )

    with _CRAWL_LOCK:
        original = fsm_module.crawl
        fsm_module.crawl = crawl
        try:
            yield
        finally:
            fsm_module.crawl = original


CONSTRAINTS.register("regex", "text that fully matches the given regular expression")(regex)
