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
    """A `FeynmanKac` model run as a `HostFeynmanKac` (G groups, rows finish after `horizon`)."""

    def __init__(
        self,
        fk: FeynmanKac,
        num_groups: int,
        horizon: jax.Array | int,
        initial_key: jax.Array | None = None,
    ):
        self.fk, self.num_groups, self.horizon = fk, num_groups, horizon
        self.initial_key = initial_key  # given: x_0 is drawn with it, not the sampler's key

    def initial_sample(self, rng_key: jax.Array, num_particles: int) -> Rows:
        num_rows = self.num_groups * num_particles
        key = rng_key if self.initial_key is None else self.initial_key
        return Rows(self.fk.initial_sample(key, num_rows), jnp.zeros(num_rows, jnp.int32))

    def initial_log_potential(self, rows: Rows) -> np.ndarray:
        return np.asarray(self.fk.initial_log_potential(rows.x))

    def transition_sample(self, rng_key, t, rows: Rows) -> Rows:
        done = self.finished(rows)
        x = self.fk.transition_sample(rng_key, t, rows.x)
        return Rows(jnp.where(done[:, None], rows.x, x), jnp.where(done, rows.t, rows.t + 1))

    def log_potential(self, t, previous: Rows, rows: Rows) -> np.ndarray:
        moved = rows.t > previous.t
        log_g = self.fk.log_potential(t, previous.x, rows.x)
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
    key_init, key_run = jax.random.split(jax.random.key(seed))
    steps = FeynmanKacRows(bootstrap(model, ys), num_groups, horizon, key_init)
    return host_smc.run(key_run, steps, num_particles, NUM_STEPS, scheme, threshold, progress=False)


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
    def __init__(self, log_potential, num_rows=8):
        self.num_groups, self.log_g, self.num_rows = 2, log_potential, num_rows

    def initial_sample(self, rng_key, num_particles):
        return Rows(jnp.zeros((self.num_rows, 1)), jnp.zeros(self.num_rows, jnp.int32))

    def initial_log_potential(self, rows):
        return np.zeros(rows.t.shape, np.float32)

    def transition_sample(self, rng_key, t, rows):
        return Rows(rows.x + 1, rows.t + 1)

    def log_potential(self, t, previous, rows):
        return self.log_g(np.asarray(rows.t))

    def finished(self, rows):
        return np.zeros(rows.t.shape, bool)


def test_dead_group_and_nan_are_reported_without_stopping_the_other_group():
    def log_g(t):  # group 0 dies at t = 2; group 1 has one NaN row at t = 1
        out = np.zeros(t.shape, np.float32)
        out[:4] = np.where(t[:4] == 2, -np.inf, 0.0)
        out[4] = np.nan if t[4] == 1 else 0.0
        return out

    result = host_smc.run(jax.random.key(0), ConstantRows(log_g), 4, 4, progress=False)
    assert result.all_dead.tolist() == [True, False]
    assert result.log_evidence[0] == -np.inf
    assert np.isfinite(result.log_evidence[1])
    assert result.infos[0].num_nan.tolist() == [0, 1]


def test_a_plus_infinite_potential_is_an_error_naming_the_step_and_rows():
    def log_g(t):
        out = np.zeros(t.shape, np.float32)
        out[5] = np.inf if t[5] == 2 else 0.0
        return out

    with pytest.raises(ValueError, match=r"log potential is \+inf at step 2 for rows \[5\]"):
        host_smc.run(jax.random.key(0), ConstantRows(log_g), 4, 4, progress=False)


def test_bad_arguments():
    odd = ConstantRows(np.zeros_like, num_rows=7)
    with pytest.raises(ValueError, match="equal groups"):
        host_smc.run(jax.random.key(0), odd, 4, 3, progress=False)
    with pytest.raises(ValueError, match="resampling"):
        host_smc.run(jax.random.key(0), odd, 4, 3, "bogus")


def test_survivors_keep_their_own_slots():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ancestors = np.concatenate([np.sort(rng.integers(0, 5, 5)), 5 + rng.integers(0, 5, 5)])
        out = host_smc.survivors_in_place(ancestors, 5)
        for g in range(2):
            block, original = out[5 * g : 5 * g + 5], ancestors[5 * g : 5 * g + 5]
            assert sorted(block) == sorted(original)  # the same offspring counts
            assert np.all(out[block] == block)  # every parent keeps its own slot


def test_run_draws_x0_with_the_key_of_time_zero_and_mirrors_init_and_step():
    model, ys = problem()
    steps = FeynmanKacRows(bootstrap(model, ys), 2, NUM_STEPS)
    key = jax.random.key(9)
    result = host_smc.run(key, steps, 3, 3, ess_threshold=1.0, progress=False)
    state, info = host_smc.init(jax.random.fold_in(key, 0), steps, 3)
    assert state.log_weights.shape == (2, 3) and info.ancestors.tolist() == list(range(6))
    for t in (1, 2):
        state, _ = host_smc.step(jax.random.fold_in(key, t), state, steps, ess_threshold=1.0)
    assert len(result.infos) == 2 and result.state.step == state.step == 2
    np.testing.assert_array_equal(result.state.particles.x, state.particles.x)
    np.testing.assert_array_equal(result.log_evidence, state.log_evidence)


def test_host_and_jitted_smc_share_the_resampling_decision():
    from ppl.samplers.weighting import needs_resampling

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 8)) * 2
    log_weights = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    host = needs_resampling(log_weights, 0.5)  # float64 NumPy, per group
    jitted = jax.jit(jax.vmap(lambda lw: needs_resampling(lw, 0.5)))(jnp.asarray(log_weights))
    assert host.dtype == bool and 0 < host.sum() < 50
    np.testing.assert_array_equal(host, np.asarray(jitted))
