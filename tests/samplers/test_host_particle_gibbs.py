"""Host conditional SMC and particle Gibbs on a linear-Gaussian model: the kernel leaves the
exact smoothing distribution invariant (reference paths drawn exactly by forward filtering,
backward sampling), and particle Gibbs moves a biased start towards it."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.ssm.linear_gaussian import bootstrap, kalman_filter, kalman_smoother, simulate
from ppl.samplers import host_particle_gibbs as pg
from tests.monte_carlo import mean_z
from tests.samplers.test_smc import model_1d

NUM_STEPS, Z_BOUND = 6, 4.5


class Paths(NamedTuple):
    x: jax.Array  # [B, T] the path so far (1-D states)
    t: jax.Array  # [B] time index of the last state


class LinearGaussianRows:
    """x_0 is drawn with fixed keys, `initial_seeds` (without, with a reference), whatever key
    the sampler passes: the keys these tests have always drawn their starts with."""

    def __init__(self, num_groups, initial_seeds=(1, 1)):
        self.model = model_1d()
        _, self.ys = simulate(jax.random.key(3), self.model, NUM_STEPS)
        self.fk = bootstrap(self.model, self.ys)
        self.num_groups = num_groups
        self.initial_seeds = initial_seeds

    def conditional_initial_sample(self, rng_key, num_particles, reference_rows, reference):
        num_rows = self.num_groups * num_particles
        key = jax.random.key(self.initial_seeds[reference is not None])
        x0 = self.fk.initial_sample(key, num_rows)[:, 0]
        if reference is not None:
            x0 = x0.at[reference_rows].set(jnp.asarray([r[0] for r in reference]))
        x = jnp.zeros((num_rows, NUM_STEPS)).at[:, 0].set(x0)
        return Paths(x, jnp.zeros(num_rows, jnp.int32))

    def initial_sample(self, rng_key, num_particles):
        return self.conditional_initial_sample(rng_key, num_particles, None, None)

    def initial_log_potential(self, rows):
        return np.asarray(self.fk.initial_log_potential(rows.x[:, :1]))

    def _step(self, rng_key, t, rows, replay=None):
        x = self.fk.transition_sample(rng_key, t, rows.x[:, t - 1 : t])[:, 0]
        if replay is not None:
            x = x.at[replay[0]].set(jnp.asarray(replay[1][:, t]))
        return Paths(rows.x.at[:, t].set(x), rows.t + 1)

    def transition_sample(self, rng_key, t, rows):
        return self._step(rng_key, t, rows)

    def conditional_transition_sample(self, rng_key, t, rows, reference_rows, reference):
        return self._step(rng_key, t, rows, (reference_rows, np.asarray(reference)))

    def log_potential(self, t, previous, rows):
        return np.asarray(self.fk.log_potential(t, None, rows.x[:, t : t + 1]))

    def finished(self, rows):
        return np.asarray(rows.t >= NUM_STEPS - 1)

    def gather(self, rows, ancestors):
        return jax.tree.map(lambda a: a[ancestors], rows)

    def trace(self, rows, indices):
        return [np.asarray(rows.x[i]) for i in indices]


@functools.cache
def exact_smoothing():
    steps = LinearGaussianRows(1)
    means, covs = kalman_smoother(steps.model, steps.ys)
    return steps, np.asarray(means[:, 0]), np.asarray(covs[:, 0, 0])


def backward_samples(rng, count):
    """Exact draws of x_{0:T-1} | y by forward filtering, backward sampling."""
    steps, _, _ = exact_smoothing()
    filtered = kalman_filter(steps.model, steps.ys)
    m, p = np.asarray(filtered.filtered_means[:, 0]), np.asarray(filtered.filtered_covs[:, 0, 0])
    a, q = float(steps.model.transition[0, 0]), float(steps.model.transition_cov[0, 0])
    x = np.zeros((count, NUM_STEPS))
    x[:, -1] = m[-1] + np.sqrt(p[-1]) * rng.standard_normal(count)
    for t in range(NUM_STEPS - 2, -1, -1):
        gain = p[t] * a / (a * a * p[t] + q)
        mean = m[t] + gain * (x[:, t + 1] - a * m[t])
        var = p[t] - gain * a * p[t]
        x[:, t] = mean + np.sqrt(var) * rng.standard_normal(count)
    return x


def test_the_conditional_kernel_leaves_the_smoothing_distribution_invariant():
    groups, particles = 3000, 4
    steps, means, covs = exact_smoothing()
    steps = LinearGaussianRows(groups)
    reference = list(backward_samples(np.random.default_rng(0), groups))
    rows = pg.reference_rows(groups, particles)
    result = pg.run_conditional(
        jax.random.key(2), steps, particles, NUM_STEPS, reference, progress=False
    )
    assert all(np.array_equal(info.ancestors[rows], rows) for info in result.infos)
    _, new = pg.draw_reference(jax.random.key(3), steps, result)
    new = np.asarray(new)
    assert np.all(np.abs(mean_z(new, means)) < Z_BOUND)
    assert np.all(np.abs(mean_z((new - means) ** 2, covs)) < Z_BOUND)


def test_particle_gibbs_moves_a_biased_start_towards_the_smoothing_distribution():
    """1500 chains of 16 particles start from plain-SMC paths (visibly biased); four sweeps
    later the last states match the smoothing means and the early states, which mix slowly
    without ancestor sampling, are much closer."""
    groups, particles = 1500, 16
    _, means, _ = exact_smoothing()
    steps = LinearGaussianRows(groups, initial_seeds=(10, 11))
    results = pg.run(jax.random.key(4), steps, particles, NUM_STEPS, 4, progress=False).sweeps
    z = [
        mean_z(np.asarray(pg.draw_reference(jax.random.key(5), steps, r)[1]), means)
        for r in (results[0], results[-1])
    ]
    assert np.max(np.abs(z[0])) > 2 * Z_BOUND  # the start is biased
    assert np.max(np.abs(z[1])) < np.max(np.abs(z[0])) / 2
    assert abs(z[1][-1]) < Z_BOUND


def test_a_kernel_that_forgets_the_reference_is_caught():
    """Control: plain SMC with N = 4 (no reference) is visibly biased for the early states."""
    groups, particles = 3000, 4
    _, means, _ = exact_smoothing()
    steps = LinearGaussianRows(groups)
    from ppl.samplers import host_smc

    result = host_smc.run(
        jax.random.key(2), steps, particles, NUM_STEPS, "multinomial", 1.0, progress=False
    )
    _, paths = pg.draw_reference(jax.random.key(3), steps, result)
    assert np.max(np.abs(mean_z(np.asarray(paths), means))) > Z_BOUND
