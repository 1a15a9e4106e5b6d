"""Boolean constraints on generated text as per-state token masks.

A `ByteAutomaton` (see `ppl.automata`) lifted to a vocabulary: `table[s, v]` is the automaton
state after reading token v's bytes from state s. A particle keeps its state s; the tokens it
may emit next are those whose next state is not dead, and an end-of-sequence token is allowed
exactly when s is accepting. Special tokens other than end-of-sequence (they decode to no
bytes) are never allowed under a constraint. On the last token a sequence may take, only the
tokens that land in an accepting state are allowed, so every sequence the mask lets through
satisfies the constraint, whether it ends by end-of-sequence or by the token limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.automata import ByteAutomaton, token_table


class TokenConstraint(NamedTuple):
    """An automaton over tokens: a pytree of arrays, usable inside compiled loops."""

    table: jax.Array  # [S, V] int32 next state; `dead` marks disallowed tokens
    accepting: jax.Array  # [S] bool
    eos: jax.Array  # [V] bool: end-of-sequence tokens
    dead: jax.Array  # scalar int32

    @property
    def num_states(self) -> int:
        return int(self.accepting.shape[0])

    def allowed(self, states: jax.Array, last: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Allowed next tokens [B, V] bool and next states [B, V] from `states` [B]; `last`
        [B] bool marks rows taking their final token (which must end accepted)."""
        next_states = self.table[states]
        alive = next_states != self.dead
        alive = jnp.where(last[:, None], alive & self.accepting[next_states], alive)
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
    return TokenConstraint(
        jnp.asarray(table, jnp.int32),
        jnp.asarray(automaton.accepting),
        jnp.asarray(eos),
        jnp.asarray(automaton.dead, jnp.int32),
    )


def unconstrained(vocab_size: int, eos_token_ids: Sequence[int]) -> TokenConstraint:
    """Every token allowed (one accepting state; the dead state is never reached)."""
    eos = np.zeros(vocab_size, bool)
    eos[list(eos_token_ids)] = True
    return TokenConstraint(
        jnp.zeros((1, vocab_size), jnp.int32),
        jnp.ones((1,), bool),
        jnp.asarray(eos),
        jnp.asarray(1, jnp.int32),
    )
