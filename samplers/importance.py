"""Importance sampling from a proposal, corrected by the exact unnormalised target.

With an unnormalised target p̃(x) = Z p(x) and a proposal q that can be sampled and evaluated,
draw x_i ~ q, i = 1..N, and weight each by

    log w_i = log p̃(x_i) − log q(x_i).

Then Ẑ = (1/N) Σ_i w_i is unbiased for Z on the natural scale (E_q[w] = Z), and the
self-normalised estimate Σ_i W_i f(x_i), W_i = w_i / Σ_j w_j, is consistent for E_p[f]. Both
need q > 0 wherever p > 0, and their variance is finite only when E_q[w²] = ∫ p̃²/q < ∞, i.e.
when q has heavier tails than p: an overdispersed proposal is safe, a too-narrow one is not.
The effective sample size (Σ w)² / Σ w² measures how far q is from p (N when q = p).

This is how an amortized posterior (e.g. a Distribution Transformer's mixture) is made exact:
its errors cost effective samples, not bias. The delta-method standard error of a
self-normalised mean is √(Σ_i W_i² (f(x_i) − f̂)²) (Owen 2013, §9.2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ppl.diagnostics import effective_sample_size, weighted_mean
from ppl.gaussian_mixture import GaussianMixture


class ImportanceResult(NamedTuple):
    """Draws from the proposal, their unnormalised log weights and the evidence estimate."""

    samples: jax.Array  # [N, D] draws x_i ~ q
    log_weights: jax.Array  # [N] log p̃(x_i) − log q(x_i) (NaN targets counted as −inf)
    log_evidence: jax.Array  # log Ẑ = logsumexp(log w) − log N
    ess: jax.Array  # (Σ w)² / Σ w², 0 when every weight is 0
    num_nan: jax.Array  # target evaluations that were NaN


class WeightedMean(NamedTuple):
    """A self-normalised estimate Σ W_i f(x_i) and its delta-method standard error."""

    mean: jax.Array
    standard_error: jax.Array


def run_with_proposal(
    rng_key: jax.Array,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    proposal_sample: Callable[[jax.Array, int], jax.Array],
    proposal_log_prob: Callable[[jax.Array], jax.Array],
    num_samples: int,
) -> ImportanceResult:
    """Importance sampling with any proposal: `proposal_sample(rng_key, n)` gives [n, D] draws
    and `proposal_log_prob(x)` and `logdensity_fn(x)` (log p̃) take one point [D]."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    samples = proposal_sample(rng_key, num_samples)
    if samples.ndim != 2 or samples.shape[0] != num_samples:
        raise ValueError(f"proposal_sample must return [{num_samples}, D], got {samples.shape}")
    log_target = jax.vmap(logdensity_fn)(samples)
    num_nan = jnp.sum(jnp.isnan(log_target))
    log_target = jnp.where(jnp.isnan(log_target), -jnp.inf, log_target)
    log_weights = log_target - jax.vmap(proposal_log_prob)(samples)
    log_evidence = logsumexp(log_weights) - jnp.log(num_samples)
    return ImportanceResult(
        samples, log_weights, log_evidence, effective_sample_size(log_weights), num_nan
    )


def run(
    rng_key: jax.Array,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    proposal: GaussianMixture,
    num_samples: int,
) -> ImportanceResult:
    """Importance sampling with a Gaussian-mixture proposal (`run_with_proposal`)."""
    return run_with_proposal(
        rng_key, logdensity_fn, proposal.sample, proposal.log_prob, num_samples
    )


def posterior_mean(result: ImportanceResult) -> WeightedMean:
    """The self-normalised posterior mean Σ W_i x_i [D] and its delta-method standard error
    √(Σ W_i² (x_i − x̂)²) per dimension."""
    mean = weighted_mean(result.log_weights, result.samples)
    weights = jax.nn.softmax(result.log_weights)
    variance = jnp.sum(weights[:, None] ** 2 * (result.samples - mean) ** 2, axis=0)
    return WeightedMean(mean, jnp.sqrt(variance))
