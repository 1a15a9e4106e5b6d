"""The Kalman filter and smoother against the dense joint Gaussian of (x_{0:T}, y_{0:T})."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

from ppl.models.ssm.linear_gaussian import (
    LinearGaussian,
    bootstrap,
    kalman_filter,
    kalman_smoother,
    optimal_proposal,
    simulate,
)
from ppl.samplers import smc


def two_dim_model() -> LinearGaussian:
    return LinearGaussian(
        initial_mean=jnp.asarray([0.5, -1.0]),
        initial_cov=jnp.asarray([[1.0, 0.3], [0.3, 0.5]]),
        transition=jnp.asarray([[0.9, 0.1], [-0.2, 0.8]]),
        transition_cov=jnp.asarray([[0.3, 0.05], [0.05, 0.2]]),
        observation=jnp.asarray([[1.0, 0.5]]),
        observation_cov=jnp.asarray([[0.4]]),
    )


def dense_joint(model: LinearGaussian, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the stacked vector (x_0..x_{T-1}, y_0..y_{T-1}) in float64."""
    m = {k: np.asarray(v, np.float64) for k, v in model._asdict().items()}
    dx = m["initial_mean"].size
    means = [m["initial_mean"]]
    for _ in range(1, num_steps):
        means.append(m["transition"] @ means[-1])
    cross = np.zeros((num_steps * dx, num_steps * dx))
    for s in range(num_steps):
        cov_s = m["initial_cov"]
        if s > 0:
            prev = cross[(s - 1) * dx : s * dx, (s - 1) * dx : s * dx]
            cov_s = m["transition"] @ prev @ m["transition"].T + m["transition_cov"]
        cross[s * dx : (s + 1) * dx, s * dx : (s + 1) * dx] = cov_s
        for t in range(s + 1, num_steps):  # Cov(x_t, x_s) = A^(t-s) Cov(x_s)
            block = np.linalg.matrix_power(m["transition"], t - s) @ cov_s
            cross[t * dx : (t + 1) * dx, s * dx : (s + 1) * dx] = block
            cross[s * dx : (s + 1) * dx, t * dx : (t + 1) * dx] = block.T
    H = np.kron(np.eye(num_steps), m["observation"])
    R = np.kron(np.eye(num_steps), m["observation_cov"])
    mean_x = np.concatenate(means)
    mean = np.concatenate([mean_x, H @ mean_x])
    cov = np.block([[cross, cross @ H.T], [H @ cross, H @ cross @ H.T + R]])
    return mean, cov


def test_log_likelihood_filter_and_smoother_match_dense_gaussian():
    model, num_steps = two_dim_model(), 6
    _, ys = simulate(jax.random.key(0), model, num_steps)
    mean, cov = dense_joint(model, num_steps)
    nx = num_steps * 2
    y = np.asarray(ys, np.float64).reshape(-1)
    expected_ll = multivariate_normal.logpdf(y, mean[nx:], cov[nx:, nx:])
    result = kalman_filter(model, ys)
    np.testing.assert_allclose(result.log_likelihood, expected_ll, rtol=1e-4)
    # smoothing: x | y_{0:T-1}, all at once
    gain = cov[:nx, nx:] @ np.linalg.inv(cov[nx:, nx:])
    post_mean = mean[:nx] + gain @ (y - mean[nx:])
    post_cov = cov[:nx, :nx] - gain @ cov[nx:, :nx]
    smooth_means, smooth_covs = kalman_smoother(model, ys)
    np.testing.assert_allclose(smooth_means.reshape(-1), post_mean, atol=1e-4)
    for t in range(num_steps):
        block = post_cov[2 * t : 2 * t + 2, 2 * t : 2 * t + 2]
        np.testing.assert_allclose(smooth_covs[t], block, atol=1e-4)
    # filtering at the last step equals smoothing at the last step
    np.testing.assert_allclose(result.filtered_means[-1], post_mean[-2:], atol=1e-4)
    # filtering at t: condition on y_{0:t} only
    t = 2
    keep = np.r_[0:nx, nx : nx + (t + 1)]
    sub_mean, sub_cov = mean[keep], cov[np.ix_(keep, keep)]
    g = sub_cov[2 * t : 2 * t + 2, nx:] @ np.linalg.inv(sub_cov[nx:, nx:])
    expected = sub_mean[2 * t : 2 * t + 2] + g @ (y[: t + 1] - sub_mean[nx:])
    np.testing.assert_allclose(result.filtered_means[t], expected, atol=1e-4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transition_cov": -jnp.eye(2)}, r"transition_cov must be positive definite"),
        ({"observation_cov": jnp.asarray([[-0.4]])}, r"observation_cov must be positive definite"),
        ({"initial_cov": jnp.asarray([[1.0, 2.0], [0.0, 1.0]])}, "initial_cov must be symmetric"),
        ({"initial_cov": jnp.full((2, 2), jnp.nan)}, "initial_cov holds 4 NaN or infinite"),
        ({"transition": jnp.full((2, 2), jnp.nan)}, "transition holds 4 NaN or infinite"),
        ({"initial_mean": jnp.asarray([jnp.inf, 0.0])}, "initial_mean holds 1 NaN or infinite"),
        ({"transition": jnp.eye(3)}, r"transition must have shape \(2, 2\) for dx = 2, dy = 1"),
        ({"observation_cov": jnp.eye(2)}, r"observation_cov must have shape \(1, 1\)"),
    ],
)
def test_bad_parameters_are_named(change, message):
    model = two_dim_model()._replace(**change)
    ys = jnp.zeros((4, 1))
    for call in (
        lambda: simulate(jax.random.key(0), model, 4),
        lambda: kalman_filter(model, ys),
        lambda: bootstrap(model, ys),
        lambda: optimal_proposal(model, ys),
    ):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize(
    ("observations", "message"),
    [
        (jnp.asarray([[0.1], [jnp.nan]]), "observations holds 1 NaN or infinite"),
        (jnp.zeros(3), r"observations must be \[T >= 1, 1\], got shape \(3,\)"),
        (jnp.zeros((3, 2)), r"got shape \(3, 2\)"),
        (jnp.zeros((0, 1)), r"got shape \(0, 1\)"),
    ],
)
def test_bad_observations_are_named(observations, message):
    model = two_dim_model()
    with pytest.raises(ValueError, match=message):
        kalman_filter(model, observations)
    with pytest.raises(ValueError, match=message):
        bootstrap(model, observations)


@pytest.mark.parametrize(
    ("num_steps", "message"),
    [(0, "num_steps must be >= 1, got 0"), (-1, "must be >= 1, got -1"), (2.5, "integer")],
)
def test_bad_step_counts_are_named(num_steps, message):
    with pytest.raises(ValueError, match=message):
        simulate(jax.random.key(0), two_dim_model(), num_steps)
    fk = bootstrap(two_dim_model(), jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match=message):
        smc.run(jax.random.key(0), fk, 4, num_steps)


def test_traced_parameters_are_not_checked():
    def log_likelihood(variance: jax.Array) -> jax.Array:
        model = two_dim_model()._replace(observation_cov=jnp.reshape(variance, (1, 1)))
        return kalman_filter(model, jnp.zeros((3, 1))).log_likelihood

    assert np.isnan(jax.jit(log_likelihood)(-1.0))  # no check under jit; NaN as before
    assert np.isfinite(jax.jit(log_likelihood)(0.4))
