"""Stop strings as token-level automata, so a jit-compiled decode loop can detect them.

For a stop string s of n bytes, the state of a sequence is the length of the longest suffix of
its text that is a proper prefix of s (Knuth-Morris-Pratt). `table[q, v]` is the state after
appending token v's bytes in state q, or n once s has appeared, which may straddle tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class StopAutomata(NamedTuple):
    """Transition tables of several stop strings, padded to a common number of states."""

    tables: jax.Array  # [num_stops, max_len, V] int32; value == lengths[i] means matched
    lengths: jax.Array  # [num_stops] int32


def _failure_function(pattern: bytes) -> list[int]:
    fail = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = fail[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        fail[i] = k
    return fail


def _byte_transitions(pattern: bytes) -> np.ndarray:
    """delta[q, byte] for states q < n (the full-match state n is absorbing)."""
    n = len(pattern)
    fail = _failure_function(pattern)
    delta = np.zeros((n, 256), np.int32)
    for q in range(n):
        for byte in range(256):
            k = q
            while k and pattern[k] != byte:
                k = fail[k - 1]
            delta[q, byte] = k + 1 if pattern[k] == byte else 0
    return delta


def stop_table(pattern: bytes, token_bytes: Sequence[bytes]) -> np.ndarray:
    """table[q, v]: the state after token v from state q; `len(pattern)` once matched."""
    if not pattern:
        raise ValueError("a stop string must not be empty")
    n = len(pattern)
    delta = _byte_transitions(pattern)
    lengths = np.asarray([len(b) for b in token_bytes])
    padded = np.zeros((len(token_bytes), max(int(lengths.max(initial=0)), 1)), np.uint8)
    for v, chunk in enumerate(token_bytes):
        padded[v, : len(chunk)] = np.frombuffer(chunk, np.uint8)
    states = np.repeat(np.arange(n, dtype=np.int32)[:, None], len(token_bytes), axis=1)
    for j in range(padded.shape[1]):  # feed every token's j-th byte at once
        active = (j < lengths)[None, :] & (states < n)
        following = delta[np.minimum(states, n - 1), padded[None, :, j]]
        states = np.where(active, following, states)
    return states


def build_stop_automata(stops: Sequence[str], token_bytes: Sequence[bytes]) -> StopAutomata:
    """Tables for the given stop strings (UTF-8) over a vocabulary's token bytes."""
    patterns = [s.encode("utf-8") for s in stops]
    width = max((len(p) for p in patterns), default=1)
    tables = np.zeros((len(patterns), width, len(token_bytes)), np.int32)
    for i, pattern in enumerate(patterns):
        tables[i, : len(pattern)] = stop_table(pattern, token_bytes)
    lengths = np.asarray([len(p) for p in patterns], np.int32)
    return StopAutomata(jnp.asarray(tables), jnp.asarray(lengths))


def advance(automata: StopAutomata, states: jax.Array, tokens: jax.Array) -> jax.Array:
    """New states [B, num_stops] after appending `tokens` [B] in `states` [B, num_stops]."""
    num_stops = automata.tables.shape[0]
    stop_index = jnp.arange(num_stops)[None, :]
    safe = jnp.minimum(states, automata.lengths[None, :] - 1)
    return automata.tables[stop_index, safe, tokens[:, None]]


def matched(automata: StopAutomata, states: jax.Array) -> jax.Array:
    """[B] bool: some stop string has appeared."""
    return jnp.any(states >= automata.lengths[None, :], axis=-1)
