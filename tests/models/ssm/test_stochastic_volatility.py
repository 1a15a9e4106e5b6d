"""The stochastic volatility model: simulation moments, bootstrap SMC evidence against a fine
grid (quadrature) filter, and parameter validation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.ssm.stochastic_volatility import StochasticVolatility, bootstrap, simulate
from ppl.samplers import smc
from tests.monte_carlo import evidence_ratio_z

Z_BOUND = 4.0  # |z| bound for one test statistic at a fixed seed
MODEL = StochasticVolatility(mu=-0.5, phi=0.95, sigma=0.3)
NUM_STEPS = 20


def stationary_variance(model: StochasticVolatility) -> float:
    return float(model.sigma) ** 2 / (1 - float(model.phi) ** 2)


def test_simulate_shapes():
    states, ys = simulate(jax.random.key(0), MODEL, 7)
    assert states.shape == ys.shape == (7,)
    assert jnp.issubdtype(states.dtype, jnp.floating)
    assert jnp.issubdtype(ys.dtype, jnp.floating)


def test_simulated_moments_match_the_stationary_distribution():
    """x_0 is drawn from the stationary law, so every x_t ~ N(μ, σ²/(1-φ²)) exactly and
    E[y_t²] = E[exp(x_t)] = exp(μ + σ²/(2(1-φ²))). Per chain, the time averages of (x_t - μ)²
    and y_t² are unbiased for these; across independent chains they are i.i.d., so their
    across-chain standard error gives an honest z-test (no autocorrelation correction)."""
    chains, length = 200, 2000
    keys = jax.random.split(jax.random.key(1), chains)
    states, ys = jax.jit(jax.vmap(lambda k: simulate(k, MODEL, length)))(keys)
    states, ys = np.asarray(states, np.float64), np.asarray(ys, np.float64)
    variance = stationary_variance(MODEL)
    expected = {
        "mean of x": (states.mean(1), MODEL.mu),
        "variance of x": (((states - MODEL.mu) ** 2).mean(1), variance),
        "mean of y^2": ((ys**2).mean(1), np.exp(MODEL.mu + variance / 2)),
    }
    for name, (per_chain, target) in expected.items():
        z = (per_chain.mean() - target) / (per_chain.std(ddof=1) / np.sqrt(chains))
        assert abs(z) < Z_BOUND, (name, per_chain.mean(), target, z)


def grid_log_likelihood(model: StochasticVolatility, ys: np.ndarray, num_points: int) -> float:
    """log p(y_{0:T-1}) by a grid filter in float64: densities on num_points equispaced points
    over μ ± 8 stationary sds, integrals by the rectangle rule (the integrands are smooth and
    negligible at the ends, where it is as accurate as the trapezoid rule)."""
    mu, phi, sigma = model
    sd = np.sqrt(stationary_variance(model))
    grid = np.linspace(mu - 8 * sd, mu + 8 * sd, num_points)
    dx = grid[1] - grid[0]

    def normal_pdf(x, mean, scale):
        return np.exp(-0.5 * ((x - mean) / scale) ** 2) / (scale * np.sqrt(2 * np.pi))

    def likelihood(y):
        return normal_pdf(y, 0.0, np.exp(grid / 2))

    transition = normal_pdf(grid[None, :], mu + phi * (grid[:, None] - mu), sigma)  # [from, to]
    density, log_z = normal_pdf(grid, mu, sd), 0.0
    for t, y in enumerate(ys):
        if t > 0:
            density = (density * dx) @ transition
        joint = density * likelihood(y)
        increment = joint.sum() * dx
        log_z += np.log(increment)
        density = joint / increment
    return float(log_z)


@functools.cache
def problem():
    _, ys = simulate(jax.random.key(3), MODEL, NUM_STEPS)
    return ys, grid_log_likelihood(MODEL, np.asarray(ys, np.float64), 2000)


def test_grid_reference_has_converged():
    ys, log_z = problem()
    coarse = grid_log_likelihood(MODEL, np.asarray(ys, np.float64), 1000)
    assert abs(coarse - log_z) < 1e-6, (coarse, log_z)


def test_bootstrap_evidence_is_unbiased_against_the_grid_filter():
    ys, log_z_grid = problem()
    fk = bootstrap(MODEL, ys)

    def one(key):
        return smc.run(key, fk, 256, NUM_STEPS, keep_history=False).log_evidence

    runs = 500
    log_z = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(11), runs))
    z = evidence_ratio_z(log_z, log_z_grid)
    assert abs(z) < Z_BOUND, z


@pytest.mark.parametrize("phi", [1.0, -1.0, 1.5, float("nan")])
def test_non_stationary_phi_is_rejected(phi):
    model = StochasticVolatility(mu=0.0, phi=phi, sigma=0.5)
    with pytest.raises(ValueError, match=r"phi must satisfy \|phi\| < 1"):
        simulate(jax.random.key(0), model, 5)
    with pytest.raises(ValueError, match=r"phi must satisfy \|phi\| < 1"):
        bootstrap(model, jnp.zeros(5))


@pytest.mark.parametrize("sigma", [0.0, -0.5, float("nan"), float("inf")])
def test_non_positive_sigma_is_rejected(sigma):
    model = StochasticVolatility(mu=0.0, phi=0.5, sigma=sigma)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        simulate(jax.random.key(0), model, 5)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        bootstrap(model, jnp.zeros(5))


def test_traced_parameters_are_not_checked():
    def log_evidence(phi):
        fk = bootstrap(StochasticVolatility(MODEL.mu, phi, MODEL.sigma), jnp.zeros(3))
        return smc.run(jax.random.key(0), fk, 8, 3).log_evidence

    assert np.isfinite(jax.jit(log_evidence)(0.9))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (StochasticVolatility(float("nan"), 0.5, 0.3), "mu must be finite, got nan"),
        (StochasticVolatility(float("inf"), 0.5, 0.3), "mu must be finite, got inf"),
        (StochasticVolatility(0.0, "0.5", 0.3), "phi must be a number, got '0.5'"),
    ],
)
def test_bad_mu_or_phi_is_named(model, message):
    with pytest.raises(ValueError, match=message):
        simulate(jax.random.key(0), model, 5)
    with pytest.raises(ValueError, match=message):
        bootstrap(model, jnp.zeros(5))


@pytest.mark.parametrize(
    ("observations", "message"),
    [
        (jnp.asarray([0.1, jnp.nan, 0.2]), "observations holds 1 NaN or infinite"),
        (jnp.zeros((3, 1)), r"observations must be \[T >= 1\], got shape \(3, 1\)"),
        (jnp.zeros(0), r"got shape \(0,\)"),
    ],
)
def test_bad_observations_are_named(observations, message):
    with pytest.raises(ValueError, match=message):
        bootstrap(MODEL, observations)


@pytest.mark.parametrize("num_steps", [0, -1, 2.5])
def test_bad_step_counts_are_named(num_steps):
    with pytest.raises(ValueError, match=f"num_steps must be .*>= 1, got {num_steps}"):
        simulate(jax.random.key(0), MODEL, num_steps)
