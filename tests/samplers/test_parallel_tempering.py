"""Particle Gibbs with parallel tempering on a linear-Gaussian model, where every tempered
target is again linear-Gaussian: tempering p(y_t | x_t) = N(y_t; x_t, R) by beta gives
N(y_t; x_t, R / beta) up to a constant, so each chain has an exact Kalman smoother."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.ssm.linear_gaussian import bootstrap, kalman_smoother
from ppl.samplers import parallel_tempering as pt
from ppl.samplers.parallel_tempering import path_log_potential, temper
from tests.monte_carlo import batch_means_z
from tests.samplers.test_particle_gibbs import (
    BURN_IN,
    NUM_STEPS,
    Z_BOUND,
    gaussian_transition,
    model_1d,
    problem,
)

BETAS = (1.0, 0.5, 0.25)


@functools.cache
def run():
    model, _, ys, _, _ = problem()
    result = jax.jit(
        functools.partial(
            pt.run,
            model=bootstrap(model, ys),
            inverse_temperatures=jnp.asarray(BETAS),
            num_particles=10,
            num_steps=NUM_STEPS,
            num_iterations=3000 + BURN_IN,
            transition_log_density=gaussian_transition(model),
        )
    )(jax.random.key(7))
    return result, np.asarray(result.paths[BURN_IN:, :, :, 0], np.float64)  # [n, K, T]


def tempered_smoother(beta):
    _, _, ys, _, _ = problem()
    means, covs = kalman_smoother(model_1d(1.0 / beta), ys)
    return np.asarray(means[:, 0]), np.asarray(covs[:, 0, 0])


@pytest.mark.parametrize("chain", [0, 1, 2])
def test_every_chain_samples_its_tempered_smoothing_distribution(chain):
    _, draws = run()
    means, variances = tempered_smoother(BETAS[chain])
    x = draws[:, chain]
    assert np.all(np.abs(batch_means_z(x, means)) < Z_BOUND)
    assert np.all(np.abs(batch_means_z((x - means) ** 2, variances)) < Z_BOUND)


def test_a_hot_chain_is_not_the_target():
    """Power: the beta = 0.25 chain fails the test against the untempered smoother."""
    _, draws = run()
    means, _ = tempered_smoother(1.0)
    assert np.max(np.abs(batch_means_z(draws[:, 2], means))) > Z_BOUND


def test_swaps_alternate_between_pairs_and_some_are_accepted():
    result, _ = run()
    attempted = np.asarray(result.swap_attempted)
    assert attempted[0].tolist() == [True, False] and attempted[1].tolist() == [False, True]
    rates = np.asarray(result.swap_rates())
    assert np.all((rates > 0.05) & (rates < 1.0)), rates


def test_path_log_potential_and_tempering():
    model, states, ys, _, _ = problem()
    fk = bootstrap(model, ys)
    path = states  # [T, 1]
    expected = np.sum(-0.5 * np.log(2 * np.pi) - 0.5 * (np.asarray(ys) - np.asarray(states)) ** 2)
    np.testing.assert_allclose(path_log_potential(fk, path), expected, rtol=1e-5)
    np.testing.assert_allclose(path_log_potential(temper(fk, 0.5), path), 0.5 * expected, rtol=1e-5)
    assert float(path_log_potential(temper(fk, 0.0), path)) == 0.0


def test_bad_temperatures_are_rejected():
    model, _, ys, _, _ = problem()
    with pytest.raises(ValueError, match="at least two inverse temperatures"):
        pt.run(jax.random.key(0), bootstrap(model, ys), jnp.asarray([1.0]), 4, 8, 2)


def test_progress_runs_give_the_same_draws():
    from ppl.samplers import particle_gibbs

    model, _, ys, _, _ = problem()
    kwargs = {
        "model": bootstrap(model, ys),
        "num_particles": 4,
        "num_steps": NUM_STEPS,
        "num_iterations": 7,
    }
    betas = jnp.asarray([1.0, 0.5])
    plain = pt.run(jax.random.key(3), inverse_temperatures=betas, **kwargs)
    shown = pt.run(jax.random.key(3), inverse_temperatures=betas, progress=True, **kwargs)
    np.testing.assert_allclose(plain.paths, shown.paths, rtol=1e-6)
    np.testing.assert_array_equal(plain.swap_accepted, shown.swap_accepted)
    a = particle_gibbs.run(jax.random.key(4), initial_reference=None, **kwargs).paths
    b = particle_gibbs.run(jax.random.key(4), initial_reference=None, progress=True, **kwargs).paths
    np.testing.assert_allclose(a, b, rtol=1e-6)
