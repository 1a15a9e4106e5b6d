"""Linear-Gaussian state-space model with its exact Kalman filter and RTS smoother.

    x_0 ~ N(m_0, P_0),  x_t = A x_{t-1} + e_t, e_t ~ N(0, Q),  y_t = H x_t + v_t, v_t ~ N(0, R),

observed at t = 0..T-1. The Kalman filter gives p(x_t | y_{0:t}) = N(m_t, P_t) and the
log-likelihood log p(y_{0:T-1}) = Σ_t log N(y_t; H m_{t|t-1}, H P_{t|t-1} H^T + R); the
Rauch-Tung-Striebel smoother gives p(x_t | y_{0:T-1}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.stats import multivariate_normal

from ppl import checks, state_space
from ppl.feynman_kac import FeynmanKac
from ppl.state_space import Proposal, StateSpaceModel


class LinearGaussian(NamedTuple):
    initial_mean: jax.Array  # [dx]
    initial_cov: jax.Array  # [dx, dx]
    transition: jax.Array  # A [dx, dx]
    transition_cov: jax.Array  # Q [dx, dx]
    observation: jax.Array  # H [dy, dx]
    observation_cov: jax.Array  # R [dy, dy]


def validate(model: LinearGaussian) -> LinearGaussian:
    """Raise a ValueError for shapes that do not fit together and, on concrete (untraced)
    values, for non-finite means and matrices or covariances that are not symmetric positive
    definite; traced values pass through unchecked."""
    dx = jnp.shape(model.initial_mean)[0] if jnp.ndim(model.initial_mean) == 1 else None
    if dx is None or jnp.ndim(model.observation) != 2:
        raise ValueError(
            f"need initial_mean [dx] and observation [dy, dx], got shapes "
            f"{jnp.shape(model.initial_mean)}, {jnp.shape(model.observation)}"
        )
    dy = jnp.shape(model.observation)[0]
    shapes = {
        "initial_cov": (dx, dx),
        "transition": (dx, dx),
        "transition_cov": (dx, dx),
        "observation": (dy, dx),
        "observation_cov": (dy, dy),
    }
    for name, want in shapes.items():
        if jnp.shape(getattr(model, name)) != want:
            raise ValueError(
                f"{name} must have shape {want} for dx = {dx}, dy = {dy}, "
                f"got {jnp.shape(getattr(model, name))}"
            )
    for name in ("initial_mean", "transition", "observation"):
        checks.finite_array(name, getattr(model, name))
    for name in ("initial_cov", "transition_cov", "observation_cov"):
        checks.positive_definite(name, getattr(model, name))
    return model


def check_observations(model: LinearGaussian, observations: jax.Array) -> None:
    """Observations must be [T >= 1, dy]; concrete ones must be finite."""
    dy = jnp.shape(model.observation)[0]
    shape = jnp.shape(observations)
    if len(shape) != 2 or shape[1] != dy or shape[0] < 1:
        raise ValueError(f"observations must be [T >= 1, {dy}], got shape {shape}")
    checks.finite_array("observations", observations)


class KalmanResult(NamedTuple):
    log_likelihood: jax.Array  # scalar
    filtered_means: jax.Array  # [T, dx]
    filtered_covs: jax.Array  # [T, dx, dx]
    predicted_means: jax.Array  # [T, dx] m_{t|t-1} (m_0 at t = 0)
    predicted_covs: jax.Array  # [T, dx, dx]


def simulate(
    rng_key: jax.Array, model: LinearGaussian, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """States [T, dx] and observations [T, dy], T = `num_steps` >= 1."""
    validate(model)
    num_steps = checks.count("num_steps", num_steps)
    key0, key_steps = jax.random.split(rng_key)
    x0 = jax.random.multivariate_normal(key0, model.initial_mean, model.initial_cov)

    def body(x: jax.Array, key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        k_obs, k_next = jax.random.split(key)
        y = jax.random.multivariate_normal(k_obs, model.observation @ x, model.observation_cov)
        mean_next = model.transition @ x
        x_next = jax.random.multivariate_normal(k_next, mean_next, model.transition_cov)
        return x_next, (x, y)

    _, (states, observations) = jax.lax.scan(body, x0, jax.random.split(key_steps, num_steps))
    return states, observations


def kalman_filter(model: LinearGaussian, observations: jax.Array) -> KalmanResult:
    """Exact filtering distributions and log-likelihood."""
    validate(model)
    check_observations(model, observations)
    A, Q, H, R = model.transition, model.transition_cov, model.observation, model.observation_cov

    def update(mean: jax.Array, cov: jax.Array, y: jax.Array) -> tuple[jax.Array, ...]:
        innovation_cov = H @ cov @ H.T + R
        log_lik = jnp.asarray(multivariate_normal.logpdf(y, H @ mean, innovation_cov))
        gain = jnp.linalg.solve(innovation_cov, H @ cov).T
        return mean + gain @ (y - H @ mean), cov - gain @ H @ cov, log_lik

    def body(carry: tuple, y: jax.Array) -> tuple[tuple, tuple]:
        mean, cov, total, first = carry
        pred_mean = jnp.where(first, mean, A @ mean)
        pred_cov = jnp.where(first, cov, A @ cov @ A.T + Q)
        new_mean, new_cov, log_lik = update(pred_mean, pred_cov, y)
        return (new_mean, new_cov, total + log_lik, False), (new_mean, new_cov, pred_mean, pred_cov)

    init = (model.initial_mean, model.initial_cov, jnp.zeros(()), True)
    (_, _, log_lik, _), (means, covs, pmeans, pcovs) = jax.lax.scan(body, init, observations)
    return KalmanResult(log_lik, means, covs, pmeans, pcovs)


def kalman_smoother(model: LinearGaussian, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rauch-Tung-Striebel smoothing means [T, dx] and covariances [T, dx, dx]."""
    filtered = kalman_filter(model, observations)
    A = model.transition

    def body(carry: tuple, xs: tuple) -> tuple[tuple, tuple]:
        next_mean, next_cov = carry
        mean, cov, pred_mean_next, pred_cov_next = xs
        gain = jnp.linalg.solve(pred_cov_next, A @ cov).T
        smooth_mean = mean + gain @ (next_mean - pred_mean_next)
        smooth_cov = cov + gain @ (next_cov - pred_cov_next) @ gain.T
        return (smooth_mean, smooth_cov), (smooth_mean, smooth_cov)

    last = (filtered.filtered_means[-1], filtered.filtered_covs[-1])
    xs = (
        filtered.filtered_means[:-1],
        filtered.filtered_covs[:-1],
        filtered.predicted_means[1:],
        filtered.predicted_covs[1:],
    )
    _, (means, covs) = jax.lax.scan(body, last, xs, reverse=True)
    return (
        jnp.concatenate([means, last[0][None]]),
        jnp.concatenate([covs, last[1][None]]),
    )


def state_space_model(model: LinearGaussian, observations: jax.Array) -> StateSpaceModel:
    """The model's prior dynamics and observation likelihood (particles: [N, dx] arrays)."""
    validate(model)
    check_observations(model, observations)
    chol_q = jnp.linalg.cholesky(model.transition_cov)
    chol_p0 = jnp.linalg.cholesky(model.initial_cov)
    dx = model.initial_mean.shape[0]

    def gaussian(x: jax.Array, mean: jax.Array, cov: jax.Array) -> jax.Array:
        return jnp.asarray(multivariate_normal.logpdf(x, mean, cov))

    return StateSpaceModel(
        initial_sample=lambda key, n: (
            model.initial_mean + jax.random.normal(key, (n, dx)) @ chol_p0.T
        ),
        initial_log_density=lambda x: gaussian(x, model.initial_mean, model.initial_cov),
        transition_sample=lambda key, t, x: (
            x @ model.transition.T + jax.random.normal(key, x.shape) @ chol_q.T
        ),
        transition_log_density=lambda t, x_prev, x: gaussian(
            x, x_prev @ model.transition.T, model.transition_cov
        ),
        observation_log_likelihood=lambda t, x: gaussian(
            observations[t], x @ model.observation.T, model.observation_cov
        ),
        num_steps=observations.shape[0],
    )


def bootstrap(model: LinearGaussian, observations: jax.Array) -> FeynmanKac:
    """The bootstrap Feynman-Kac model: propose from the dynamics, weight by p(y_t | x_t)."""
    return state_space.bootstrap(state_space_model(model, observations))


def optimal_proposal(model: LinearGaussian, observations: jax.Array) -> Proposal:
    """The locally optimal proposal p(x_t | x_{t-1}, y_t) = N(S (P^-1 a + H^T R^-1 y_t), S),
    S = (P^-1 + H^T R^-1 H)^-1, with (a, P) = (A x_{t-1}, Q), or (m_0, P_0) at t = 0."""
    validate(model)
    check_observations(model, observations)
    H, R_inv = model.observation, jnp.linalg.inv(model.observation_cov)

    def posterior(prior_cov: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        prior_precision = jnp.linalg.inv(prior_cov)
        cov = jnp.linalg.inv(prior_precision + H.T @ R_inv @ H)
        return cov, prior_precision, jnp.linalg.cholesky(cov)

    cov0, prec0, chol0 = posterior(model.initial_cov)
    cov, prec, chol = posterior(model.transition_cov)

    def mean(
        prior_mean: jax.Array, precision: jax.Array, cov_: jax.Array, t: jax.Array
    ) -> jax.Array:
        return (prior_mean @ precision.T + observations[t] @ (H.T @ R_inv).T) @ cov_.T

    def transition_mean(t: jax.Array, x_prev: jax.Array) -> jax.Array:
        return mean(x_prev @ model.transition.T, prec, cov, t)

    t0 = jnp.zeros((), jnp.int32)
    mean0 = mean(model.initial_mean, prec0, cov0, t0)
    dx = model.initial_mean.shape[0]
    return Proposal(
        initial_sample=lambda key, n: mean0 + jax.random.normal(key, (n, dx)) @ chol0.T,
        initial_log_density=lambda x: jnp.asarray(multivariate_normal.logpdf(x, mean0, cov0)),
        transition_sample=lambda key, t, x: (
            transition_mean(t, x) + jax.random.normal(key, x.shape) @ chol.T
        ),
        transition_log_density=lambda t, x_prev, x: jnp.asarray(
            multivariate_normal.logpdf(x, transition_mean(t, x_prev), cov)
        ),
    )


def predictive_log_likelihood(
    model: LinearGaussian, observations: jax.Array
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """log p(y_{t+1} | x_t) = log N(y_{t+1}; H A x_t, H Q H^T + R): the exact look-ahead for
    `ppl.state_space.auxiliary`."""
    validate(model)
    check_observations(model, observations)
    H, A = model.observation, model.transition
    cov = H @ model.transition_cov @ H.T + model.observation_cov
    last = observations.shape[0] - 1

    def log_lookahead(t: jax.Array, x: jax.Array) -> jax.Array:
        y_next = observations[jnp.minimum(t + 1, last)]
        return jnp.asarray(multivariate_normal.logpdf(y_next, x @ (H @ A).T, cov))

    return log_lookahead
