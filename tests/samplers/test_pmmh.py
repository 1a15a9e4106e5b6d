"""Particle marginal Metropolis-Hastings against the exact posterior of a transition
coefficient: a 1-D linear-Gaussian model (H = 1, R = 1, Q = 0.5, m_0 = 0, P_0 = 1, T = 20),
simulated at a = 0.7, with a uniform prior on a ∈ (-1, 1).

The exact posterior p(a | y) ∝ p(y | a) on (-1, 1) is computed on a grid of 2001 points from
the Kalman log-likelihood (trapezoid weights). One PMMH chain (bootstrap filter, N = 64, SD of
log Ẑ about 0.7 at the posterior mean) runs 6500 iterations and keeps the last 6000. Its
posterior mean and second moment are checked with batch-means z-tests: 40 batches of 150
draws, long against the chain's integrated autocorrelation time (about 10 at the acceptance
rate of about 0.34), so z is approximately Student-t with 39 degrees of freedom and
P(|z| > 4.5) is about 6e-5 per statistic. Over 16 seeds (not in the suite) the z-scores of
both statistics looked standard normal (all |z| < 2.1). The same chain is far from the
posterior of a wrong model (R = 3), which shows the test has power. Every seed is fixed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.ssm.linear_gaussian import LinearGaussian, bootstrap, kalman_filter, simulate
from ppl.samplers import pmmh as pm
from tests.monte_carlo import batch_means_z

Z_BOUND = 4.5
NUM_STEPS = 20
NUM_PARTICLES = 64
BURN_IN = 500
NUM_KEPT = 6000
NUM_BATCHES = 40
STEP_SIZE = 0.5  # random-walk standard deviation: acceptance about 0.34


def model_1d(a: jax.Array | float, observation_variance: float = 1.0) -> LinearGaussian:
    return LinearGaussian(
        initial_mean=jnp.zeros(1),
        initial_cov=jnp.eye(1),
        transition=jnp.reshape(jnp.asarray(a, jnp.float32), (1, 1)),
        transition_cov=jnp.asarray([[0.5]]),
        observation=jnp.eye(1),
        observation_cov=jnp.asarray([[observation_variance]]),
    )


@functools.cache
def observations() -> jax.Array:
    """The data [T, 1], concrete even when first asked for inside a jit trace."""
    with jax.ensure_compile_time_eval():
        _, ys = simulate(jax.random.key(0), model_1d(0.7), NUM_STEPS)
    return ys


def log_prior(theta: jax.Array) -> jax.Array:
    """Uniform on (-1, 1)."""
    return jnp.where(jnp.all(jnp.abs(theta) < 1.0), jnp.log(0.5), -jnp.inf)


def model_fn(theta: jax.Array):
    return bootstrap(model_1d(theta[0]), observations())


@functools.cache
def grid_moments(observation_variance: float = 1.0) -> tuple[float, float]:
    """E[a | y] and E[a^2 | y] under the uniform prior, by the trapezoid rule on 2001 points."""
    ys = observations()
    grid = jnp.linspace(-1.0, 1.0, 2001)
    log_lik = np.asarray(
        jax.vmap(lambda a: kalman_filter(model_1d(a, observation_variance), ys).log_likelihood)(
            grid
        ),
        np.float64,
    )
    weights = np.exp(log_lik - log_lik.max())
    weights[[0, -1]] *= 0.5
    weights /= weights.sum()
    a = np.asarray(grid, np.float64)
    return float(weights @ a), float(weights @ a**2)


def run_chain(key: jax.Array, num_iterations: int, step_size=STEP_SIZE, model=model_fn):
    return pm.run(
        key,
        jnp.zeros(1),
        log_prior,
        model,
        num_iterations,
        NUM_PARTICLES,
        NUM_STEPS,
        step_size,
    )


@functools.cache
def chain() -> tuple[np.ndarray, pm.PMMHInfo]:
    """a draws [NUM_KEPT] of one jitted chain after burn-in, and the infos of all iterations."""
    run = jax.jit(run_chain, static_argnums=1)
    positions, infos = run(jax.random.key(7), BURN_IN + NUM_KEPT)
    return np.asarray(positions[BURN_IN:, 0], np.float64), infos


def model_fn_initial_draw_traced(model, a: jax.Array) -> jax.Array:
    """One initial particle of `model` at a (NaN where the model is invalid)."""
    return model(jnp.reshape(a, (1,))).initial_sample(jax.random.key(0), 1)[0, 0]


def model_fn_initial_draw(model, a: float) -> float:
    return float(model_fn_initial_draw_traced(model, jnp.asarray(a)))


def test_pmmh_recovers_the_grid_posterior():
    """Posterior mean and second moment of a within Monte Carlo error, and a sane
    acceptance rate."""
    draws, infos = chain()
    mean, second_moment = grid_moments()
    acceptance = float(np.mean(infos.accepted))
    print(f"acceptance rate {acceptance:.3f}")
    assert 0.05 < acceptance < 0.9, acceptance
    z = [
        float(batch_means_z(draws, mean, NUM_BATCHES)),
        float(batch_means_z(draws**2, second_moment, NUM_BATCHES)),
    ]
    print(f"z (mean, second moment) = {z}")
    assert np.all(np.abs(z) < Z_BOUND), z


def test_a_wrong_posterior_fails_the_same_test():
    """The check has power: the same chain against the grid posterior of the model with
    observation variance 3 instead of 1 is far outside the bound."""
    draws, _ = chain()
    mean, second_moment = grid_moments(observation_variance=3.0)
    z = [
        float(batch_means_z(draws, mean, NUM_BATCHES)),
        float(batch_means_z(draws**2, second_moment, NUM_BATCHES)),
    ]
    print(f"z against the wrong posterior = {z}")
    assert np.max(np.abs(z)) > Z_BOUND, z


def test_proposals_outside_the_support_are_rejected_without_nan():
    """The main chain proposes outside (-1, 1) and never goes there. With a model that is
    NaN outside the support (stationary initial variance Q / (1 - a^2)) and a wide proposal,
    the chain, also under vmap (where both branches of the guard run), stays finite and
    inside the support, and the impossible proposals carry log Ẑ = -inf."""
    draws, infos = chain()
    outside = np.abs(np.asarray(infos.proposed_position[:, 0])) >= 1.0
    assert outside.sum() > 100, outside.sum()
    assert not np.any(np.asarray(infos.accepted)[outside])
    assert np.all(np.abs(draws) < 1.0)
    assert np.all(np.isneginf(np.asarray(infos.proposed_log_likelihood)[outside]))
    assert not np.any(np.isnan(np.asarray(infos.proposed_log_likelihood)))

    def stationary_model(theta: jax.Array):
        a = theta[0]
        base = model_1d(a)
        initial_cov = jnp.reshape(0.5 / (1.0 - a**2), (1, 1))  # negative for |a| > 1
        return bootstrap(base._replace(initial_cov=initial_cov), observations())

    # The guard is needed: at a concrete a = 1.5 the model is refused, traced it draws NaN.
    with pytest.raises(ValueError, match="initial_cov must be positive definite"):
        model_fn_initial_draw(stationary_model, 1.5)
    assert np.isnan(jax.jit(lambda a: model_fn_initial_draw_traced(stationary_model, a))(1.5))
    keys = jax.random.split(jax.random.key(3), 2)
    positions, infos = jax.jit(
        jax.vmap(lambda key: run_chain(key, 200, step_size=1.5, model=stationary_model))
    )(keys)
    positions, proposed = np.asarray(positions), np.asarray(infos.proposed_position)
    outside = np.abs(proposed) >= 1.0
    assert outside.sum() > 100, outside.sum()
    assert not np.any(np.asarray(infos.accepted)[outside[..., 0]])
    assert np.all(np.isfinite(positions)) and np.all(np.abs(positions) < 1.0)
    assert np.all(np.isneginf(np.asarray(infos.proposed_log_likelihood)[outside[..., 0]]))
    assert np.all(np.isfinite(np.asarray(infos.proposed_log_likelihood)[~outside[..., 0]]))
    assert np.any(np.asarray(infos.accepted)), "the chain never moved"


def test_the_stored_estimate_is_used_for_the_current_state():
    """The current state's log Ẑ is the stored one, never re-estimated: a state that claims
    a huge likelihood is never left, one that claims a negligible likelihood always accepts
    a proposal inside the support."""
    keys = jax.random.split(jax.random.key(11), 200)

    def step(stored: float, key: jax.Array) -> pm.PMMHInfo:
        position = jnp.asarray([0.8])
        state = pm.PMMHState(position, log_prior(position), jnp.asarray(stored))
        _, info = pm.step(key, state, log_prior, model_fn, NUM_PARTICLES, NUM_STEPS, 0.2)
        return info

    high = jax.jit(jax.vmap(functools.partial(step, 1e6)))(keys)
    low = jax.jit(jax.vmap(functools.partial(step, -1e6)))(keys)
    assert not np.any(np.asarray(high.accepted))
    inside = np.abs(np.asarray(low.proposed_position[:, 0])) < 1.0
    assert 0 < inside.sum() < len(keys)  # some proposals leave the support
    np.testing.assert_array_equal(np.asarray(low.accepted), inside)


def test_jit_and_eager_give_the_same_chain():
    """20 iterations of `pmmh` give the same chain jitted and not; the first iterations also
    equal an op-by-op loop of `init` and `step` with the same keys (kept short: each eager
    step traces and compiles its SMC run anew)."""
    key = jax.random.key(5)
    num_iterations, num_looped = 20, 4
    compiled_positions, compiled = jax.jit(run_chain, static_argnums=1)(key, num_iterations)
    eager_positions, eager = run_chain(key, num_iterations)
    accepted = np.asarray(compiled.accepted)
    assert 0 < accepted.sum() < num_iterations  # both branches are exercised
    np.testing.assert_array_equal(np.asarray(eager.accepted), accepted)
    np.testing.assert_allclose(eager_positions, compiled_positions, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        eager.proposed_log_likelihood, compiled.proposed_log_likelihood, rtol=1e-4
    )

    key_init, key_chain = jax.random.split(key)
    state = pm.init(key_init, jnp.zeros(1), log_prior, model_fn, NUM_PARTICLES, NUM_STEPS)
    for i, step_key in enumerate(jax.random.split(key_chain, num_iterations)[:num_looped]):
        state, info = pm.step(
            step_key, state, log_prior, model_fn, NUM_PARTICLES, NUM_STEPS, STEP_SIZE
        )
        assert bool(info.accepted) == accepted[i]
        np.testing.assert_allclose(state.position, compiled_positions[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            info.proposed_log_likelihood, compiled.proposed_log_likelihood[i], rtol=1e-4
        )


def test_proposal_scales():
    """A scalar, a [d] array and a [d, d] covariance give the same proposal when they agree;
    bad shapes and arguments are named."""
    key = jax.random.key(2)
    state = pm.PMMHState(jnp.zeros(2), jnp.zeros(()), jnp.zeros(()))

    def flat_model(theta):
        return bootstrap(model_1d(0.5), observations())

    def proposal(step_size):
        _, info = pm.step(key, state, lambda t: jnp.zeros(()), flat_model, 4, 2, step_size)
        return np.asarray(info.proposed_position)

    scalar = proposal(0.3)
    np.testing.assert_allclose(proposal(jnp.asarray([0.3, 0.3])), scalar, rtol=1e-6)
    np.testing.assert_allclose(proposal(0.09 * jnp.eye(2)), scalar, rtol=1e-6)
    with pytest.raises(ValueError, match="step_size"):
        proposal(jnp.ones(3))
    with pytest.raises(ValueError, match="flat"):
        pm.run(key, jnp.zeros((1, 1)), log_prior, model_fn, 10, 4, NUM_STEPS, 0.1)
    with pytest.raises(ValueError, match="num_iterations"):
        pm.run(key, jnp.zeros(1), log_prior, model_fn, 0, 4, NUM_STEPS, 0.1)
    with pytest.raises(ValueError, match="ess_threshold"):
        pm.run(key, jnp.zeros(1), log_prior, model_fn, 10, 4, NUM_STEPS, 0.1, ess_threshold=2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_particles": 0}, "num_particles must be >= 1, got 0"),
        ({"num_particles": -1}, "num_particles must be >= 1, got -1"),
        ({"num_particles": 2.5}, "num_particles must be an integer >= 1, got 2.5"),
        ({"num_particles": True}, "num_particles must be an integer >= 1, got True"),
        ({"num_steps": 0}, "num_steps must be >= 1, got 0"),
        ({"num_steps": 2.5}, "num_steps must be an integer >= 1, got 2.5"),
        ({"num_iterations": 0}, "num_iterations must be >= 1, got 0"),
        ({"num_iterations": True}, "num_iterations must be an integer >= 1, got True"),
        ({"step_size": float("nan")}, "step_size must hold finite standard deviations >= 0"),
        ({"step_size": float("inf")}, "step_size must hold finite standard deviations >= 0"),
        ({"step_size": -0.5}, r"standard deviations >= 0, not all 0, got -0.5"),
        ({"step_size": 0.0}, r"not all 0, got 0."),
        ({"step_size": jnp.array([[-1.0]])}, r"step_size \(a proposal covariance\) must be pos"),
        ({"step_size": jnp.ones(2)}, r"step_size must be a scalar, a \[1\] array or a \[1, 1\]"),
        ({"initial_position": jnp.array([jnp.nan])}, r"the position holds 1 NaN or infinite"),
        ({"initial_position": jnp.zeros((1, 1))}, r"flat \[d\] array, got shape \(1, 1\)"),
        ({"initial_position": jnp.zeros(0)}, r"flat \[d\] array, got shape \(0,\)"),
        ({"initial_position": "abc"}, "array of numbers, got 'abc'"),
        ({"resampling": "bogus"}, "unknown resampling scheme 'bogus'"),
        ({"ess_threshold": 1.5}, r"ess_threshold must be a finite number in \[0, 1\], got 1.5"),
        ({"ess_threshold": float("nan")}, r"ess_threshold must be a finite number in \[0, 1\]"),
        ({"ess_threshold": "0.5"}, r"in \[0, 1\], got '0.5'"),
    ],
)
def test_bad_arguments_are_named(change, message):
    arguments = {
        "initial_position": jnp.zeros(1),
        "num_iterations": 2,
        "num_particles": 4,
        "num_steps": NUM_STEPS,
        "step_size": STEP_SIZE,
        "resampling": "systematic",
        "ess_threshold": 0.5,
    } | change
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=message):
        pm.run(key, log_prior=log_prior, model_fn=model_fn, **arguments)
    if "num_iterations" in change or "step_size" in change or "initial_position" in change:
        return
    del arguments["num_iterations"], arguments["step_size"], arguments["initial_position"]
    with pytest.raises(ValueError, match=message):  # the same checks before any SMC run
        pm.log_likelihood_estimate(key, jnp.zeros(1), jnp.zeros(()), model_fn, **arguments)


@pytest.mark.parametrize("step_size", [float("nan"), -0.5, jnp.array([[float("nan")]])])
def test_step_checks_a_concrete_step_size(step_size):
    state = pm.PMMHState(jnp.zeros(1), jnp.zeros(()), jnp.zeros(()))
    with pytest.raises(ValueError, match="step_size"):
        pm.step(jax.random.key(0), state, log_prior, model_fn, 4, NUM_STEPS, step_size)
