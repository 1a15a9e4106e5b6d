"""Backward-simulation smoothing recovers the Kalman (RTS) smoother moments."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from ppl.models.ssm.linear_gaussian import bootstrap, kalman_smoother, state_space_model
from ppl.samplers import smc
from ppl.samplers.backward_smoothing import backward_sample
from tests.samplers.test_smc import NUM_STEPS, problem


def smoothed_moments(model, ys, num_particles, wrong_density=False):
    fk = bootstrap(model, ys)
    density = state_space_model(model, ys).transition_log_density
    if wrong_density:  # ignores the dynamics: backward sampling degenerates to filtering
        density = lambda t, x_prev, x: 0.0 * x_prev[:, 0]  # noqa: E731

    def one(key):
        key_smc, key_back = jax.random.split(key)
        result = smc.run(key_smc, fk, num_particles, NUM_STEPS)
        paths = backward_sample(key_back, result.particles, result.log_weights, density, 64)
        x = paths[..., 0]  # [T, M]
        return x.mean(1), (x**2).mean(1)

    keys = jax.random.split(jax.random.key(17), 100)
    first, second = jax.jit(jax.vmap(one))(keys)
    return np.asarray(first), np.asarray(second)


def z_scores(estimates, exact):
    return (estimates.mean(0) - exact) / (estimates.std(0, ddof=1) / np.sqrt(len(estimates)))


def test_backward_paths_have_the_smoothing_moments():
    model, ys, _ = problem()
    means, covs = kalman_smoother(model, ys)
    first, second = smoothed_moments(model, ys, 500)
    exact_first = np.asarray(means[:, 0])
    exact_second = np.asarray(covs[:, 0, 0] + means[:, 0] ** 2)
    assert np.all(np.abs(z_scores(first, exact_first)) < 4.5)
    assert np.all(np.abs(z_scores(second, exact_second)) < 4.5)


def test_ignoring_the_transition_density_is_detected():
    model, ys, _ = problem()
    means, _ = kalman_smoother(model, ys)
    first, _ = smoothed_moments(model, ys, 500, wrong_density=True)
    assert np.max(np.abs(z_scores(first, np.asarray(means[:, 0])))) > 4.5


@functools.cache
def small_run() -> smc.SMCResult:
    model, ys, _ = problem()
    return smc.run(jax.random.key(0), bootstrap(model, ys), 8, NUM_STEPS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_samples": 0}, "num_samples must be >= 1, got 0"),
        ({"num_samples": -1}, "num_samples must be >= 1, got -1"),
        ({"num_samples": 2.5}, "num_samples must be an integer >= 1, got 2.5"),
        ({"num_samples": True}, "num_samples must be an integer >= 1, got True"),
        ({"log_weights": "last"}, r"log_weights must be \[T, N\], got shape \(8,\)"),
        ({"particles": "short"}, r"leaves must be \[T, N, ...\] = \[10, 8, ...\] like log_weights"),
        ({"particles": None}, "no particle history: run SMC with keep_history=True"),
    ],
)
def test_bad_arguments_are_named(change, message):
    model, ys, _ = problem()
    result = small_run()
    arguments = {
        "particles": result.particles,
        "log_weights": result.log_weights,
        "num_samples": 2,
    } | change
    if isinstance(arguments["log_weights"], str):
        arguments["log_weights"] = result.log_weights[-1]
    if isinstance(arguments["particles"], str):
        arguments["particles"] = result.particles[:4]
    density = state_space_model(model, ys).transition_log_density
    with pytest.raises(ValueError, match=message):
        backward_sample(jax.random.key(1), transition_log_density=density, **arguments)
