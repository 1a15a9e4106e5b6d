"""Weight diagnostics in log space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp


def normalize_log_weights(log_weights: jax.Array) -> jax.Array:
    """log W_i = log w_i - log Σ_j w_j; all -inf stays all -inf (no NaN)."""
    total = logsumexp(log_weights)
    return jnp.where(jnp.isfinite(total), log_weights - total, log_weights)


def effective_sample_size(log_weights: jax.Array) -> jax.Array:
    """ESS = (Σ w)^2 / Σ w^2 from unnormalized log weights; 0 when every weight is 0."""
    ess = jnp.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights))
    return jnp.where(jnp.isfinite(ess), ess, 0.0)


def effective_sample_size_normalized(log_weights: jax.Array) -> jax.Array:
    """ESS = 1 / Σ W_i² from normalized log weights (logsumexp = 0): one pass, no max."""
    return 1.0 / jnp.sum(jnp.exp(2 * log_weights))


def weighted_mean(log_weights: jax.Array, values: jax.Array) -> jax.Array:
    """Σ W_i f(x_i) over the leading (particle) axis of `values`."""
    weights = jax.nn.softmax(log_weights)
    return jnp.tensordot(weights, values, axes=(0, 0))
