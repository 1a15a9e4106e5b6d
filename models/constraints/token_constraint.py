"""Boolean constraints on generated text as per-state token masks.

A `ByteAutomaton` (see `ppl.models.constraints.automata`) lifted to a vocabulary: `table[s, v]`
is the automaton state after reading token v's bytes from state s. A particle keeps its state s; the
tokens it may emit next are those whose next state is not dead, and an end-of-sequence token is
allowed exactly when s is accepting. Special tokens other than end-of-sequence (they decode to no
bytes) are never allowed under a constraint.

The token limit is part of the target, so the mask also looks ahead to it: `distance[s]` is the
fewest tokens that lead from s to an accepting state, and with r tokens left (this one
included) a token is allowed only if distance[next state] <= r - 1. On the last token this
allows exactly the tokens that land in an accepting state, and no particle is ever extended
into a prefix that cannot be completed in time: every sequence the mask lets through satisfies
the constraint, whether it ends by end-of-sequence or by the token limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.constraints.automata import ByteAutomaton, token_table


class TokenConstraint(NamedTuple):
    """An automaton over tokens: a pytree of arrays, usable inside compiled loops."""

    table: jax.Array  # [S, V] next state (int16 when S allows); `dead` marks disallowed tokens
    accepting: jax.Array  # [S] bool
    distance: jax.Array  # [S] int32 fewest tokens to an accepting state (large if none)
    eos: jax.Array  # [V] bool: end-of-sequence tokens
    dead: jax.Array  # scalar int32

    @property
    def num_states(self) -> int:
        return int(self.accepting.shape[0])

    def allowed(self, states: jax.Array, remaining: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Allowed next tokens [B, V] bool and next states [B, V] (int32) from `states` [B],
        with `remaining` [B] tokens left including this one."""
        next_states = self.table[states].astype(jnp.int32)
        reachable = self.distance[next_states] <= (remaining - 1)[:, None]
        alive = (next_states != self.dead) & reachable
        allowed = jnp.where(self.eos[None, :], self.accepting[states][:, None], alive)
        return allowed, next_states


def lift(
    automaton: ByteAutomaton, token_bytes: Sequence[bytes], eos_token_ids: Sequence[int]
) -> TokenConstraint:
    """The automaton's token table for a vocabulary (`Tokenizer.token_bytes()` order)."""
    table = token_table(automaton, token_bytes)
    eos = np.zeros(len(token_bytes), bool)
    eos[list(eos_token_ids)] = True
    special = np.asarray([len(b) == 0 for b in token_bytes]) & ~eos
    table[:, special] = automaton.dead
    table[automaton.dead, :] = automaton.dead
    dtype = np.int16 if table.shape[0] < np.iinfo(np.int16).max else np.int32
    return TokenConstraint(
        jnp.asarray(table, dtype),
        jnp.asarray(automaton.accepting),
        jnp.asarray(token_distance(table, automaton.accepting)),
        jnp.asarray(eos),
        jnp.asarray(automaton.dead, jnp.int32),
    )


UNREACHABLE = np.iinfo(np.int32).max // 2


def token_distance(table: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """[S] the fewest tokens from each state to an accepting one (UNREACHABLE if none), by
    breadth-first search backwards over the distinct successors of each state."""
    successors = [np.unique(row) for row in table]
    predecessors: list[list[int]] = [[] for _ in successors]
    for origin, nexts in enumerate(successors):
        for nxt in nexts.tolist():
            predecessors[nxt].append(origin)
    distance = np.full(len(successors), UNREACHABLE, np.int32)
    frontier: list[int] = np.flatnonzero(accepting).tolist()
    distance[frontier] = 0
    while frontier:
        following: list[int] = []
        for state in frontier:
            for previous in predecessors[state]:
                if distance[previous] == UNREACHABLE:
                    distance[previous] = distance[state] + 1
                    following.append(previous)
        frontier = following
    return distance


def unconstrained(vocab_size: int, eos_token_ids: Sequence[int]) -> TokenConstraint:
    """Every token allowed (one accepting state; the dead state is never reached)."""
    eos = np.zeros(vocab_size, bool)
    eos[list(eos_token_ids)] = True
    return TokenConstraint(
        jnp.zeros((1, vocab_size), jnp.int16),
        jnp.ones((1,), bool),
        jnp.zeros((1,), jnp.int32),
        jnp.asarray(eos),
        jnp.asarray(1, jnp.int32),
    )
