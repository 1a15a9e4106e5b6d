"""Beam search and DVTS against a brute-force search on a deterministic tree."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.samplers import beam_search

BRANCHING = 3


def value(path: tuple[int, ...]) -> float:
    """A deterministic log potential increment for the last digit of a path."""
    return float(np.sin(7.3 * sum((d + 1) * 10.0**i for i, d in enumerate(path))))


class Paths(NamedTuple):
    digits: jax.Array  # [B, T]
    length: jax.Array  # [B]


class DigitTree:
    """Row copy k of a parent appends digit k % BRANCHING: extensions enumerate children."""

    def __init__(self, num_groups, depth, finish_after=None):
        self.num_groups, self.depth, self.finish_after = num_groups, depth, finish_after

    def initial_sample(self, rng_key, num_particles):
        num_rows = self.num_groups * num_particles
        return Paths(jnp.zeros((num_rows, self.depth), jnp.int32), jnp.zeros(num_rows, jnp.int32))

    def initial_log_potential(self, rows):
        return np.zeros(rows.length.shape)

    def transition_sample(self, rng_key, t, rows):
        done = self.finished(rows)
        digit = jnp.arange(rows.length.shape[0]) % BRANCHING
        digits = rows.digits.at[jnp.arange(len(digit)), rows.length].set(digit)
        return Paths(
            jnp.where(done[:, None], rows.digits, digits),
            jnp.where(done, rows.length, rows.length + 1),
        )

    def log_potential(self, t, previous, rows):
        moved = np.asarray(rows.length > previous.length)
        return np.asarray([value(self.path(rows, b)) if m else 0.0 for b, m in enumerate(moved)])

    def finished(self, rows):
        limit = self.depth if self.finish_after is None else self.finish_after
        lengths = np.asarray(rows.length)
        return (lengths >= limit) & ((lengths > 0) | (limit == 0))

    def gather(self, rows, ancestors):
        return jax.tree.map(lambda a: a[ancestors], rows)

    @staticmethod
    def path(rows, b):
        return tuple(int(d) for d in np.asarray(rows.digits[b, : int(rows.length[b])]))


def brute_force_beam(num_rows, expansions, depth, diverse):
    """Beam search over the same tree with Python lists."""
    block = expansions if diverse else num_rows
    beams = [((), 0.0)] * num_rows
    for t in range(depth):
        children = [
            ((*path, i % BRANCHING), score + value((*path, i % BRANCHING)))
            for i, (path, score) in enumerate(beams)
        ]
        if t == depth - 1:
            return children
        beams = []
        for start in range(0, num_rows, block):
            chunk = children[start : start + block]
            order = sorted(range(len(chunk)), key=lambda i: (-chunk[i][1], i))
            for i in order[: block // expansions]:
                beams += [chunk[i]] * expansions
    return beams


@pytest.mark.parametrize("diverse", [False, True])
def test_matches_brute_force_search(diverse):
    num_rows, expansions, depth = 12, 3, 4
    model = DigitTree(1, depth)
    result = beam_search.run(
        jax.random.key(0), model, num_rows, depth + 1, expansions, diverse, progress=False
    )
    expected = brute_force_beam(num_rows, expansions, depth, diverse)
    assert [model.path(result.particles, b) for b in range(num_rows)] == [p for p, _ in expected]
    np.testing.assert_allclose(result.scores, [s for _, s in expected])


def test_select_top_keeps_the_best_of_each_block():
    scores = np.asarray([0.1, 0.9, 0.5, 0.9, -1.0, 2.0])
    assert beam_search.select_top(scores, 6, 3).tolist() == [5, 5, 5, 1, 1, 1]
    assert beam_search.select_top(scores, 3, 3).tolist() == [1, 1, 1, 5, 5, 5]
    with pytest.raises(ValueError, match="blocks"):
        beam_search.select_top(scores, 4, 3)


class EarlyFinish(DigitTree):
    """Rows whose first digit is 0 finish after one step, with a large bonus."""

    def finished(self, rows):
        lengths, first = np.asarray(rows.length), np.asarray(rows.digits[:, 0])
        return (lengths >= self.depth) | ((lengths >= 1) & (first == 0))

    def log_potential(self, t, previous, rows):
        bonus = np.where(np.asarray(rows.digits[:, 0]) == 0, 10.0, 0.0)
        return super().log_potential(t, previous, rows) + bonus * np.asarray(previous.length == 0)


def test_finished_rows_compete_once():
    """Rows 0 and 3 finish first with the best scores and are kept, three copies each: only
    the first copy of each keeps its score, so a finished beam counts once."""
    model = EarlyFinish(1, depth=3)
    result = beam_search.run(jax.random.key(0), model, 6, 4, 3, progress=False)
    assert [model.path(result.particles, b) for b in range(6)] == [(0,)] * 6
    assert np.isfinite(result.scores).tolist() == [True, False, False, True, False, False]


def test_bad_expansions():
    with pytest.raises(ValueError, match="expansions"):
        beam_search.run(jax.random.key(0), DigitTree(1, 3), 6, 4, 4, progress=False)
