"""The log evidence from posterior draws by bridge sampling (Meng & Wong 1996).

With q(u) = p(y, u) the unnormalised posterior on the unconstrained space (Jacobian included),
Z = ∫ q(u) du = p(y), a proposal density g, N₁ posterior draws u*ᵢ and N₂ proposal draws ũⱼ,
the optimal bridge function gives Z as the fixed point of (Gronau et al. 2017, eq. 9)

    Ẑ⁽ᵗ⁺¹⁾ = [ (1/N₂) Σⱼ l₂ⱼ / (s₁ l₂ⱼ + s₂ Ẑ⁽ᵗ⁾) ] / [ (1/N₁) Σᵢ 1 / (s₁ l₁ᵢ + s₂ Ẑ⁽ᵗ⁾) ],

    l₁ᵢ = q(u*ᵢ) / g(u*ᵢ),  l₂ⱼ = q(ũⱼ) / g(ũⱼ),  s₁ = N₁ / (N₁ + N₂),  s₂ = N₂ / (N₁ + N₂).

The draws are split in half: g is the multivariate normal with the mean and covariance of the
first half, and the second half are the N₁ posterior draws (fitting g and bridging on the same
draws biases Ẑ). The iteration runs on log Ẑ with logsumexp, after subtracting the median of
log l₁ from every log l (undone at the end), until |Ẑ⁽ᵗ⁺¹⁾/Ẑ⁽ᵗ⁾ − 1| < `tolerance`.

Standard error: the approximate relative mean-squared error of Frühwirth-Schnatter (2004), as in
Gronau et al. (2017, eq. 17),

    RE² ≈ (1/N₂) V_g[f₂] / E_g[f₂]² + (1/ESS₁) V_post[f₁] / E_post[f₁]²,
    f₁ = g / (s₁ π + s₂ g) on the posterior draws,  f₂ = π / (s₁ π + s₂ g) on the proposal draws,

with π = q / Ẑ the normalised posterior. The proposal draws are independent; the posterior draws
may be autocorrelated (MCMC), so N₁ ρ_f₁(0)⁻¹ of the formula is taken as ESS₁, ArviZ's
effective sample size of the mean of f₁ over the draws in the order given (one chain; with
several chains concatenated the boundaries between them are ignored). The reported standard
error is that of log Ẑ, ≈ √RE². s₁ uses the raw count N₁, not ESS₁.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from scipy.special import logsumexp


class BridgeSamplingResult(NamedTuple):
    """log Ẑ, the standard error of log Ẑ, and the number of fixed-point iterations."""

    log_evidence: float
    standard_error: float
    iterations: int


def _as_evaluated(points: np.ndarray) -> np.ndarray:
    """The points as JAX will see them (its default float dtype), back in float64, so that q and
    g are evaluated at the same points when 64-bit mode is off."""
    return np.asarray(jnp.asarray(points), np.float64)


def _log_normal_density(points: np.ndarray, mean: np.ndarray, cholesky: np.ndarray) -> np.ndarray:
    whitened = np.linalg.solve(cholesky, (points - mean).T).T
    dimension = mean.shape[0]
    log_det = 2.0 * np.sum(np.log(np.diag(cholesky)))
    return -0.5 * (np.sum(whitened**2, axis=1) + dimension * np.log(2 * np.pi) + log_det)


def _relative_variance(log_values: np.ndarray) -> float:
    """V[f] / E[f]² from log f, scale-free (computed after dividing by max f)."""
    values = np.exp(log_values - np.max(log_values))
    return float(np.var(values) / np.mean(values) ** 2)


def log_evidence(
    rng_key: jax.Array,
    log_posterior_fn: Callable[[jax.Array], jax.Array],
    posterior_draws: ArrayLike,
    *,
    num_proposal: int | None = None,
    max_iterations: int = 1000,
    tolerance: float = 1e-10,
) -> BridgeSamplingResult:
    """Bridge-sampling estimate of log Z = log ∫ q(u) du (see the module docstring).

    `posterior_draws` [num_draws, d] are draws from q/Z on the unconstrained space (MCMC draws in
    their order, for the autocorrelation); `log_posterior_fn` maps one flat vector [d] to log q.
    `num_proposal` defaults to the number of draws in the second half. Warns (RuntimeWarning) if
    the fixed point has not converged after `max_iterations`.
    """
    draws = np.asarray(posterior_draws, np.float64)
    if draws.ndim != 2:
        raise ValueError(f"posterior_draws must be [num_draws, d], got shape {draws.shape}")
    num_draws, dimension = draws.shape
    num_fit = num_draws // 2
    if num_fit < dimension + 2:
        raise ValueError(
            f"{num_draws} draws are too few: the first half fits a {dimension}-dimensional "
            f"normal proposal, so it needs at least {dimension + 2} draws"
        )
    fit, posterior = draws[:num_fit], _as_evaluated(draws[num_fit:])
    num_posterior = posterior.shape[0]
    num_proposal = num_posterior if num_proposal is None else int(num_proposal)
    if num_proposal < 2:
        raise ValueError(f"num_proposal must be >= 2, got {num_proposal}")

    mean = fit.mean(axis=0)
    covariance = np.atleast_2d(np.cov(fit, rowvar=False))
    try:
        cholesky = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError as error:
        raise ValueError(
            "the covariance of the first half of the draws is singular; are the draws constant "
            "in some direction?"
        ) from error
    normal = np.asarray(jax.random.normal(rng_key, (num_proposal, dimension)), np.float64)
    proposal = _as_evaluated(mean + normal @ cholesky.T)

    batched = jax.jit(jax.vmap(log_posterior_fn))

    def log_q(points: np.ndarray) -> np.ndarray:
        values = np.asarray(batched(jnp.asarray(points)), np.float64)
        return np.where(np.isnan(values), -np.inf, values)  # NaN density: no mass there

    log_l1 = log_q(posterior) - _log_normal_density(posterior, mean, cholesky)
    log_l2 = log_q(proposal) - _log_normal_density(proposal, mean, cholesky)
    if not np.all(np.isfinite(log_l1)):
        raise ValueError("log_posterior_fn is not finite at some posterior draws")
    shift = float(np.median(log_l1))
    log_l1, log_l2 = log_l1 - shift, log_l2 - shift

    total = num_posterior + num_proposal
    log_s1, log_s2 = np.log(num_posterior / total), np.log(num_proposal / total)
    log_r = 0.0  # log Ẑ − shift; the fixed point does not depend on the start
    iterations = 0
    converged = False
    while iterations < max_iterations:
        iterations += 1
        numerator = logsumexp(log_l2 - np.logaddexp(log_s1 + log_l2, log_s2 + log_r))
        denominator = logsumexp(-np.logaddexp(log_s1 + log_l1, log_s2 + log_r))
        new_log_r = numerator - np.log(num_proposal) - denominator + np.log(num_posterior)
        change = abs(np.expm1(new_log_r - log_r))
        log_r = float(new_log_r)
        if change < tolerance:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"bridge sampling did not converge in {max_iterations} iterations "
            f"(last relative change {change:.2e})",
            RuntimeWarning,
            stacklevel=2,
        )

    # f₁ and f₂ with π/g = l / Ẑ, in logs
    log_f1 = -np.logaddexp(log_s1 + log_l1 - log_r, log_s2)
    log_f2 = log_l2 - log_r - np.logaddexp(log_s1 + log_l2 - log_r, log_s2)
    f1 = np.exp(log_f1 - np.max(log_f1))
    ess = float(az.ess(f1[None, :], method="mean")) if np.ptp(f1) > 0 else float(num_posterior)
    relative_mse = _relative_variance(log_f2) / num_proposal + _relative_variance(log_f1) / ess
    return BridgeSamplingResult(
        log_evidence=log_r + shift,
        standard_error=float(np.sqrt(relative_mse)),
        iterations=iterations,
    )
