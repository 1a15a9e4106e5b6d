"""Conditional SMC and particle Gibbs against the Kalman smoother on a 1-D linear-Gaussian
model (A = 0.9, Q = 0.5, H = 1, R = 1, m_0 = 0, P_0 = 1, T = 8).

The chains are checked with batch-means z-tests: a chain of n draws is cut into 40 batches,
and the standard error of the chain mean is the standard deviation of the batch means over
sqrt(40). The batches (100 or more draws) are long compared with the chains' integrated
autocorrelation times (about 1-7 with ancestor sampling, up to about 15 at t <= 2 without),
so the batch means are nearly independent and z is approximately Student-t with 39 degrees
of freedom: P(|z| > 4.5) is about 6e-5 per statistic, about 1e-3 for the 16 per chain.
Variances are checked the same way on (x_t - m_t)^2, whose expectation under the smoother
is exactly P_t (m_t, P_t the RTS mean and variance), so no effective-sample-size rule of
thumb is needed. Every seed is fixed; a wrong model (R = 10) fails the same test by far.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

from ppl.models.ssm.linear_gaussian import LinearGaussian, bootstrap, kalman_smoother, simulate
from ppl.samplers import conditional_smc as csmc
from ppl.samplers import particle_gibbs
from ppl.samplers.genealogy import trajectories
from tests.monte_carlo import batch_means_z

Z_BOUND = 4.5  # |z| bound per statistic (batch-means z over 40 batches, max over 8 times)
NUM_STEPS = 8
NUM_PARTICLES = 10
BURN_IN = 200


def model_1d(observation_variance: float = 1.0) -> LinearGaussian:
    return LinearGaussian(
        initial_mean=jnp.zeros(1),
        initial_cov=jnp.eye(1),
        transition=jnp.asarray([[0.9]]),
        transition_cov=jnp.asarray([[0.5]]),
        observation=jnp.eye(1),
        observation_cov=jnp.asarray([[observation_variance]]),
    )


@functools.cache
def problem():
    model = model_1d()
    states, ys = simulate(jax.random.key(0), model, NUM_STEPS)
    means, covs = kalman_smoother(model, ys)
    return model, states, ys, np.asarray(means[:, 0], np.float64), np.asarray(covs[:, 0, 0])


def gaussian_transition(model: LinearGaussian):
    """log p(x_t | x_{t-1}) per particle: the bootstrap model's M_t."""

    def log_density(t, x_prev, x):
        return multivariate_normal.logpdf(x, x_prev @ model.transition.T, model.transition_cov)

    return log_density


@functools.cache
def chain(ancestor_sampling: bool, num_iterations: int, observation_variance: float = 1.0):
    """x_t draws [num_iterations - BURN_IN, T] of one particle-Gibbs chain (jitted once),
    started from a plain SMC path, run on the model with the given observation variance but
    always the data simulated from the correct one."""
    _, _, ys, _, _ = problem()
    model = model_1d(observation_variance)
    density = gaussian_transition(model) if ancestor_sampling else None
    run = jax.jit(
        functools.partial(
            particle_gibbs.run,
            model=bootstrap(model, ys),
            initial_reference=None,
            num_particles=NUM_PARTICLES,
            num_steps=NUM_STEPS,
            num_iterations=num_iterations,
            transition_log_density=density,
        )
    )
    paths = run(jax.random.key(2024)).paths
    return np.asarray(paths[BURN_IN:, :, 0], np.float64)


def lag_one_autocorrelation(x: np.ndarray) -> float:
    x = x - x.mean()
    return float(x[1:] @ x[:-1] / (x @ x))


def test_pgas_recovers_smoother_means_and_variances():
    """(a) With ancestor sampling, N = 10, 4000 kept iterations: all 8 smoothing means and
    variances within Monte Carlo error."""
    *_, means, variances = problem()
    draws = chain(True, 4000 + BURN_IN)
    z_mean = batch_means_z(draws, means)
    z_var = batch_means_z((draws - means) ** 2, variances)
    assert np.all(np.abs(z_mean) < Z_BOUND), z_mean
    assert np.all(np.abs(z_var) < Z_BOUND), z_var


def test_pg_without_ancestor_sampling_recovers_smoother_and_mixes_worse_early():
    """(b) Without ancestor sampling the kernel is still exact but the early states mix
    slowly (the new path coalesces with the reference before the last steps). Checked: all 8
    means and variances, with 5x the iterations (20000 kept, batches of 500 draws, long
    against the autocorrelation times); and the path degeneracy itself: at t = 0 its lag-1
    autocorrelation exceeds the ancestor-sampling chain's."""
    *_, means, variances = problem()
    draws = chain(False, 20000 + BURN_IN)
    z_mean = batch_means_z(draws, means)
    z_var = batch_means_z((draws - means) ** 2, variances)
    assert np.all(np.abs(z_mean) < Z_BOUND), z_mean
    assert np.all(np.abs(z_var) < Z_BOUND), z_var
    with_as = lag_one_autocorrelation(chain(True, 4000 + BURN_IN)[:, 0])
    without_as = lag_one_autocorrelation(draws[:, 0])
    assert without_as > with_as + 0.2, (without_as, with_as)


def test_a_wrong_model_fails_the_same_test():
    """(d) The statistic has power: particle Gibbs (same settings as (a)) on the model with
    observation variance 10 instead of 1 gives means far from the correct smoother."""
    *_, means, _ = problem()
    z_mean = batch_means_z(chain(True, 4000 + BURN_IN, observation_variance=10.0), means)
    assert np.max(np.abs(z_mean)) > Z_BOUND, z_mean


@pytest.mark.parametrize("ancestor_sampling", [False, True])
@pytest.mark.parametrize("reference_index", [0, 3])
def test_reference_is_kept_and_runs_are_reproducible(ancestor_sampling, reference_index):
    """(c) The reference path sits in its slot of the particle history at every time, keeps
    its own ancestry without ancestor sampling, the new path is the genealogy of the drawn
    final particle, and jit and eager runs with one key agree."""
    model, states, ys, _, _ = problem()
    density = gaussian_transition(model) if ancestor_sampling else None
    run = functools.partial(
        csmc.run,
        model=bootstrap(model, ys),
        reference=states,
        num_particles=NUM_PARTICLES,
        num_steps=NUM_STEPS,
        transition_log_density=density,
        reference_index=reference_index,
    )
    eager = run(jax.random.key(5))
    compiled = jax.jit(run)(jax.random.key(5))
    np.testing.assert_array_equal(eager.particles[:, reference_index], states)
    np.testing.assert_array_equal(compiled.particles[:, reference_index], states)
    if not ancestor_sampling:
        np.testing.assert_array_equal(eager.ancestors[:, reference_index], reference_index)
    genealogy = trajectories(eager.particles, eager.ancestors)
    np.testing.assert_array_equal(eager.path, genealogy[:, eager.final_index])
    np.testing.assert_allclose(jnp.exp(eager.log_weights).sum(axis=1), 1.0, rtol=1e-5)
    assert eager.path.shape == states.shape
    np.testing.assert_array_equal(eager.ancestors, compiled.ancestors)
    np.testing.assert_array_equal(eager.final_index, compiled.final_index)
    np.testing.assert_allclose(eager.particles, compiled.particles, rtol=1e-6)
    np.testing.assert_allclose(eager.path, compiled.path, rtol=1e-6)
    np.testing.assert_allclose(eager.log_weights, compiled.log_weights, rtol=1e-5, atol=1e-6)


def test_one_step_draws_the_right_ancestors():
    """The free particles' ancestors are N - 1 independent draws from W_{t-1} (mean count
    (N - 1) W_i per parent, whatever slot the reference holds), and the reference's ancestor
    has the PGAS law W_{t-1}^i p(x'_t | x_{t-1}^i) (the bootstrap G_t does not depend on i)."""
    model, _, ys, _, _ = problem()
    fk = bootstrap(model, ys)
    n, reference_index = 5, 0
    log_weights = jnp.log(jax.random.dirichlet(jax.random.key(1), jnp.ones(n)))
    particles = jnp.linspace(-1.0, 2.0, n)[:, None]
    state = csmc.ConditionalSMCState(particles, log_weights, jnp.asarray(2, jnp.int32))
    reference_t = jnp.asarray([1.5])
    density = gaussian_transition(model)

    def ancestors(key):
        _, info = csmc.step(key, state, fk, reference_t, density, reference_index)
        return info.ancestors

    reps = 20000
    drawn = np.asarray(jax.jit(jax.vmap(ancestors))(jax.random.split(jax.random.key(8), reps)))
    weights = np.asarray(jax.nn.softmax(log_weights), np.float64)

    free = np.delete(drawn, reference_index, axis=1)
    counts = np.stack([(free == i).sum(axis=1) for i in range(n)], axis=1).astype(np.float64)
    z = (counts.mean(0) - (n - 1) * weights) / (counts.std(0, ddof=1) / np.sqrt(reps))
    assert np.all(np.abs(z) < Z_BOUND), z

    pgas = weights * np.exp(-((1.5 - 0.9 * np.asarray(particles[:, 0])) ** 2) / (2 * 0.5))
    pgas /= pgas.sum()
    hits = (drawn[:, reference_index][:, None] == np.arange(n)).astype(np.float64)
    z = (hits.mean(0) - pgas) / np.sqrt(pgas * (1 - pgas) / reps)
    assert np.all(np.abs(z) < Z_BOUND), z


def test_bad_arguments_are_named():
    model, states, ys, _, _ = problem()
    fk = bootstrap(model, ys)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_particles must be >= 2, got 1"):
        csmc.run(key, fk, states, 1, NUM_STEPS)
    with pytest.raises(ValueError, match="reference has 8 time steps, expected 6"):
        csmc.run(key, fk, states, 4, 6)
    with pytest.raises(ValueError, match="reference_index"):
        csmc.run(key, fk, states, 4, NUM_STEPS, reference_index=4)
    with pytest.raises(ValueError, match="num_iterations"):
        particle_gibbs.run(key, fk, 4, NUM_STEPS, 0, initial_reference=states)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_particles": 2.5}, "num_particles must be an integer >= 2, got 2.5"),
        ({"num_particles": True}, "num_particles must be an integer >= 2, got True"),
        ({"num_steps": 2.5}, "num_steps must be an integer >= 1, got 2.5"),
        ({"reference_index": 1.5}, "reference_index must be an integer >= 0, got 1.5"),
        ({"reference_index": True}, "reference_index must be an integer >= 0, got True"),
        ({"reference": "nan"}, r"the reference holds 1 NaN or infinite"),
        ({"reference": "wide"}, r"the reference has shape \(8, 2\), but a particle has shape"),
    ],
)
def test_bad_counts_and_references_are_named(change, message):
    model, states, ys, _, _ = problem()
    arguments = {"num_particles": 4, "num_steps": NUM_STEPS, "reference_index": 0} | change
    reference = {
        "nan": states.at[2, 0].set(jnp.nan),
        "wide": jnp.zeros((NUM_STEPS, 2)),
    }.get(arguments.pop("reference", None), states)
    with pytest.raises(ValueError, match=message):
        csmc.run(jax.random.key(0), bootstrap(model, ys), reference, **arguments)


@pytest.mark.parametrize(
    ("num_iterations", "message"),
    [(2.5, "num_iterations must be an integer >= 1, got 2.5"), (True, "got True")],
)
def test_bad_iteration_counts_are_named(num_iterations, message):
    model, states, ys, _, _ = problem()
    with pytest.raises(ValueError, match=message):
        particle_gibbs.run(
            jax.random.key(0), bootstrap(model, ys), 4, NUM_STEPS, num_iterations, states
        )
