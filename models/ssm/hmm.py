"""Discrete hidden Markov model with its exact forward algorithm.

States x_t ∈ {0..K-1}, observations y_t ∈ {0..M-1}, t = 0..T-1:

    x_0 ~ π,  P(x_t = j | x_{t-1} = i) = A_ij,  P(y_t = m | x_t = k) = B_km.

The forward recursion runs on the filtering distribution α_t(k) = p(x_t = k | y_{0:t}):

    predict:  α_{t|t-1}(j) = Σ_i α_{t-1}(i) A_ij          (α_{0|-1} = π),
    update:   c_t = Σ_k α_{t|t-1}(k) B_{k, y_t},   α_t(k) = α_{t|t-1}(k) B_{k, y_t} / c_t,

with c_t = p(y_t | y_{0:t-1}), so log p(y_{0:T-1}) = Σ_t log c_t. Every product is done in
log space (sums of logs, `logsumexp` for the sums), so zero probabilities become -inf and
long series do not underflow.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl import checks
from ppl.feynman_kac import FeynmanKac


class HiddenMarkov(NamedTuple):
    initial_probs: jax.Array  # π [K]
    transition_matrix: jax.Array  # A [K, K], row i is p(x_t | x_{t-1} = i)
    emission_probs: jax.Array  # B [K, M], row k is p(y_t | x_t = k)


class ForwardResult(NamedTuple):
    log_likelihood: jax.Array  # scalar log p(y_{0:T-1})
    filtered_probs: jax.Array  # [T, K] p(x_t | y_{0:t})


def _check_shapes(model: HiddenMarkov) -> None:
    """Shapes that fit together; on concrete values, rows that are probability vectors."""
    if jnp.ndim(model.initial_probs) != 1:
        raise ValueError(f"initial_probs must be 1-D [K], got {jnp.shape(model.initial_probs)}")
    k = jnp.shape(model.initial_probs)[0]
    if jnp.shape(model.transition_matrix) != (k, k):
        raise ValueError(
            f"transition_matrix must have shape ({k}, {k}) to match initial_probs, "
            f"got {jnp.shape(model.transition_matrix)}"
        )
    if jnp.ndim(model.emission_probs) != 2 or jnp.shape(model.emission_probs)[0] != k:
        raise ValueError(
            f"emission_probs must have shape ({k}, M) to match initial_probs, "
            f"got {jnp.shape(model.emission_probs)}"
        )
    for name in ("initial_probs", "transition_matrix", "emission_probs"):
        _check_probabilities(name, getattr(model, name))


def _check_probabilities(name: str, value: jax.Array) -> None:
    """On concrete values: every row a probability vector (finite, >= 0, sums to 1)."""
    if not checks.is_concrete(value):
        return
    checks.finite_array(name, value)
    probs = np.asarray(value, np.float64)
    if (probs < 0).any():
        raise ValueError(f"{name} has negative entries: {checks.shown(probs)}")
    sums = probs.sum(axis=-1)
    bad = np.flatnonzero(~np.isclose(np.atleast_1d(sums), 1.0, rtol=0, atol=1e-4))
    if bad.size:
        where = "" if probs.ndim == 1 else f" (rows {bad.tolist()})"
        raise ValueError(f"{name} must sum to 1{where}, got sums {np.round(sums, 6).tolist()}")


def check_observations(model: HiddenMarkov, observations: jax.Array) -> jax.Array:
    """Observations as int32 [T >= 1]; concrete ones must be symbols in [0, M)."""
    shape = jnp.shape(observations)
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"observations must be a 1-D [T >= 1] array of symbols, got {shape}")
    num_symbols = jnp.shape(model.emission_probs)[1]
    if checks.is_concrete(observations):
        values = np.asarray(observations)
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"observations must be integer symbols, got dtype {values.dtype}")
        bad = np.flatnonzero((values < 0) | (values >= num_symbols))
        if bad.size:
            raise ValueError(
                f"observations must be symbols in [0, {num_symbols}); at t = {bad[:10].tolist()} "
                f"they are {values[bad[:10]].tolist()}"
            )
    return jnp.asarray(observations, jnp.int32)


def simulate(
    rng_key: jax.Array, model: HiddenMarkov, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """States [T] and observations [T], both int32, T = `num_steps` >= 1."""
    _check_shapes(model)
    num_steps = checks.count("num_steps", num_steps)
    log_a, log_b = jnp.log(model.transition_matrix), jnp.log(model.emission_probs)
    key0, key_steps = jax.random.split(rng_key)
    x0 = jax.random.categorical(key0, jnp.log(model.initial_probs)).astype(jnp.int32)

    def body(x: jax.Array, key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        k_obs, k_next = jax.random.split(key)
        y = jax.random.categorical(k_obs, log_b[x]).astype(jnp.int32)
        x_next = jax.random.categorical(k_next, log_a[x]).astype(jnp.int32)
        return x_next, (x, y)

    _, (states, observations) = jax.lax.scan(body, x0, jax.random.split(key_steps, num_steps))
    return states, observations


def forward_algorithm(model: HiddenMarkov, observations: jax.Array) -> ForwardResult:
    """Exact filtering probabilities p(x_t | y_{0:t}) and log-likelihood, in log space."""
    _check_shapes(model)
    observations = check_observations(model, observations)
    log_a, log_b = jnp.log(model.transition_matrix), jnp.log(model.emission_probs)

    def update(log_pred: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        joint = log_pred + log_b[:, y]
        log_c = logsumexp(joint)
        return joint - log_c, log_c

    log_filtered0, log_c0 = update(jnp.log(model.initial_probs), observations[0])

    def body(carry: tuple, y: jax.Array) -> tuple[tuple, jax.Array]:
        log_filtered, total = carry
        log_pred = logsumexp(log_filtered[:, None] + log_a, axis=0)
        new_filtered, log_c = update(log_pred, y)
        return (new_filtered, total + log_c), new_filtered

    (_, log_lik), rest = jax.lax.scan(body, (log_filtered0, log_c0), observations[1:])
    log_filtered = jnp.concatenate([log_filtered0[None], rest], axis=0)
    return ForwardResult(log_lik, jnp.exp(log_filtered))


def bootstrap(model: HiddenMarkov, observations: jax.Array) -> FeynmanKac:
    """The bootstrap Feynman-Kac model on int32 particles [N]: propose from π and the
    transition row of the parent, weight by log B[x_t, y_t]."""
    _check_shapes(model)
    observations = check_observations(model, observations)
    log_pi = jnp.log(model.initial_probs)
    log_a, log_b = jnp.log(model.transition_matrix), jnp.log(model.emission_probs)

    def initial_sample(key: jax.Array, n: int) -> jax.Array:
        return jax.random.categorical(key, log_pi, shape=(n,)).astype(jnp.int32)

    def transition_sample(key: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
        return jax.random.categorical(key, log_a[x]).astype(jnp.int32)

    return FeynmanKac(
        initial_sample=initial_sample,
        initial_log_potential=lambda x: log_b[x, observations[0]],
        transition_sample=transition_sample,
        log_potential=lambda t, x_prev, x: log_b[x, observations[t]],
        num_steps=observations.shape[0],
    )
