"""Host-driven grouped SMC against the Kalman filter, with absorption and per-group reporting."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.feynman_kac import FeynmanKac
from ppl.models.ssm.linear_gaussian import bootstrap, kalman_filter, simulate
from ppl.samplers import host_smc
from tests.monte_carlo import evidence_ratio_z
from tests.samplers.test_smc import NUM_STEPS, Z_BOUND, model_1d


class Rows(NamedTuple):
    x: jax.Array  # [B, ...]
    t: jax.Array  # [B] time index of x


class FeynmanKacRows:
    """A `FeynmanKac` model run as a `StepwiseModel` (G groups, rows finish after `horizon`)."""

    def __init__(self, fk: FeynmanKac, num_groups: int, horizon: jax.Array | int):
        self.fk, self.num_groups, self.horizon = fk, num_groups, horizon

    def start(self, rng_key: jax.Array, num_rows: int) -> tuple[Rows, np.ndarray]:
        x = self.fk.initial_sample(rng_key, num_rows)
        return Rows(x, jnp.zeros(num_rows, jnp.int32)), np.asarray(self.fk.initial_log_potential(x))

    def extend(self, rng_key, rows: Rows) -> Rows:
        done = self.finished(rows)
        t = jnp.max(rows.t) + 1
        x = self.fk.transition_sample(rng_key, t, rows.x)
        return Rows(jnp.where(done[:, None], rows.x, x), jnp.where(done, rows.t, rows.t + 1))

    def log_potential(self, previous: Rows, rows: Rows) -> np.ndarray:
        moved = rows.t > previous.t
        log_g = self.fk.log_potential(jnp.max(rows.t), previous.x, rows.x)
        return np.asarray(jnp.where(moved, log_g, 0.0))

    def finished(self, rows: Rows) -> np.ndarray:
        return np.asarray(rows.t >= self.horizon - 1)

    def gather(self, rows: Rows, ancestors) -> Rows:
        return jax.tree.map(lambda a: a[ancestors], rows)


@functools.cache
def problem():
    model = model_1d()
    _, ys = simulate(jax.random.key(3), model, NUM_STEPS)
    return model, ys


def run_groups(seed, num_groups, num_particles, horizon, threshold=0.5, scheme="systematic"):
    model, ys = problem()
    steps = FeynmanKacRows(bootstrap(model, ys), num_groups, horizon)
    key_init, key_run = jax.random.split(jax.random.key(seed))
    rows, log_g0 = steps.start(key_init, num_groups * num_particles)
    return host_smc.run(key_run, steps, rows, NUM_STEPS, scheme, threshold, log_g0, progress=False)


@pytest.mark.parametrize(("scheme", "threshold"), [("systematic", 0.5), ("multinomial", 1.0)])
def test_group_evidence_is_unbiased(scheme, threshold):
    model, ys = problem()
    exact = float(kalman_filter(model, ys).log_likelihood)
    result = run_groups(0, 1500, 16, NUM_STEPS, threshold, scheme)
    assert result.log_evidence.shape == (1500,)
    assert abs(evidence_ratio_z(result.log_evidence, exact)) < Z_BOUND


def test_absorbed_rows_keep_their_weights_and_evidence_is_of_the_prefix():
    """Rows that finish at time 4 stop: their evidence is that of y_0..y_4."""
    model, ys = problem()
    horizon = 5
    exact = float(kalman_filter(model, ys[:horizon]).log_likelihood)
    result = run_groups(1, 1500, 16, horizon)
    assert len(result.infos) == horizon - 1  # the loop ends once every row is finished
    assert abs(evidence_ratio_z(result.log_evidence, exact)) < Z_BOUND


def test_resampling_stays_within_groups():
    result = run_groups(2, 8, 16, NUM_STEPS, threshold=1.0)
    for info in result.infos:
        assert np.array_equal(info.ancestors // 16, np.repeat(np.arange(8), 16))


class ConstantRows(FeynmanKacRows):
    def __init__(self, log_potential):
        self.num_groups, self.log_g = 2, log_potential

    def extend(self, rng_key, rows):
        return Rows(rows.x + 1, rows.t + 1)

    def log_potential(self, previous, rows):
        return self.log_g(np.asarray(rows.t))

    def finished(self, rows):
        return np.zeros(rows.t.shape, bool)


def test_dead_group_and_nan_are_reported_without_stopping_the_other_group():
    def log_g(t):  # group 0 dies at t = 2; group 1 has one NaN row at t = 1
        out = np.zeros(t.shape, np.float32)
        out[:4] = np.where(t[:4] == 2, -np.inf, 0.0)
        out[4] = np.nan if t[4] == 1 else 0.0
        return out

    rows = Rows(jnp.zeros((8, 1)), jnp.zeros(8, jnp.int32))
    result = host_smc.run(jax.random.key(0), ConstantRows(log_g), rows, 3, progress=False)
    assert result.all_dead.tolist() == [True, False]
    assert result.log_evidence[0] == -np.inf
    assert np.isfinite(result.log_evidence[1])
    assert result.infos[0].num_nan.tolist() == [0, 1]


def test_bad_arguments():
    rows = Rows(jnp.zeros((7, 1)), jnp.zeros(7, jnp.int32))
    with pytest.raises(ValueError, match="equal groups"):
        host_smc.run(jax.random.key(0), ConstantRows(np.zeros_like), rows, 2, progress=False)
    with pytest.raises(ValueError, match="resampling"):
        host_smc.run(jax.random.key(0), ConstantRows(np.zeros_like), rows, 2, "bogus")


def test_survivors_keep_their_own_slots():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ancestors = np.concatenate([np.sort(rng.integers(0, 5, 5)), 5 + rng.integers(0, 5, 5)])
        out = host_smc.survivors_in_place(ancestors, 5)
        for g in range(2):
            block, original = out[5 * g : 5 * g + 5], ancestors[5 * g : 5 * g + 5]
            assert sorted(block) == sorted(original)  # the same offspring counts
            assert np.all(out[block] == block)  # every parent keeps its own slot
