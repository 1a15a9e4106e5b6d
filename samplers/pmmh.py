"""Particle marginal Metropolis-Hastings (PMMH) for static parameters of a `FeynmanKac` model.

For a parameter θ ∈ R^d with prior p(θ) and a model whose Feynman-Kac normalizing constant
is the likelihood Z(θ) = p(y | θ) (for a state-space model, any proposal: see
`ppl.feynman_kac`), the target is the posterior π(θ) ∝ p(θ) Z(θ). Z(θ) is intractable, but
SMC (`ppl.samplers.smc.run`) gives a non-negative unbiased estimate Ẑ(θ) = exp(log_evidence).
PMMH (Andrieu, Doucet and Holenstein 2010) is random-walk Metropolis-Hastings in which Z is
replaced by its estimate, computed once per proposal and stored with the state:

1. propose θ' = θ + L ε, ε ~ N(0, I_d) (symmetric, so there is no Hastings correction);
2. if p(θ') > 0, run SMC on `model_fn(θ')` for log Ẑ(θ'); otherwise skip it (log Ẑ = -inf);
3. accept (θ', Ẑ(θ')) with probability

       α = min(1, p(θ') Ẑ(θ') / (p(θ) Ẑ(θ))),

   where Ẑ(θ) is the estimate stored when θ was accepted; else keep (θ, Ẑ(θ)).

Why this is exact: write Ẑ(θ) = Z(θ) W with W the estimator's noise, E[W | θ] = 1 (unbiased
SMC). The pair (θ, W) is a Metropolis-Hastings chain with proposal q(θ' | θ) g(W' | θ') on the
extended target π̄(θ, W) ∝ p(θ) Z(θ) W g(W | θ), whose θ-marginal is π(θ) because
∫ W g(W | θ) dW = 1; the ratio above is exactly the MH ratio of π̄. This needs the current
state's estimate to be kept, never recomputed: re-estimating Ẑ(θ) at each step (the "Monte
Carlo within Metropolis" kernel) targets a different, wrong distribution. The number of
particles only changes mixing: a noisier log Ẑ makes the chain stickier (an overestimate
at the current state is hard to leave); a standard deviation of log Ẑ around 1-1.5 at the
posterior mode is the usual tuning target (Doucet et al. 2015).

Proposal: `step_size` is either a scalar or a [d] array of per-dimension standard deviations
(L = diag(step_size)), or a [d, d] covariance matrix Σ (L = cholesky(Σ)); chosen by its number
of dimensions. Concrete (untraced) step sizes must be finite and >= 0 (not all 0), a
covariance symmetric positive definite; a concrete starting position must be finite.

Impossible proposals: a proposal with log p(θ') = -inf is rejected without running SMC (the
run is under a `lax.cond`; under `jax.vmap` both branches run, and whatever `model_fn` gives
there is discarded by `jnp.where`), so `model_fn` need not be valid outside the prior's support.
A NaN log-likelihood estimate counts as -inf (always rejected). A current state whose
p(θ) Ẑ(θ) is zero accepts any proposal with p(θ') Ẑ(θ') > 0.

Everything is traced: wrap `pmmh` (or `step`) in `jax.jit` with `log_prior`, `model_fn`, the
integer arguments, `resampling` and `ess_threshold` static (e.g. via `functools.partial`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ppl import checks
from ppl.feynman_kac import FeynmanKac
from ppl.samplers import smc
from ppl.samplers.resampling import get_scheme
from ppl.samplers.weighting import check_num_particles

LogPrior = Callable[[jax.Array], jax.Array]
ModelFn = Callable[[jax.Array], FeynmanKac]


class PMMHState(NamedTuple):
    position: jax.Array  # θ [d]
    log_prior: jax.Array  # scalar log p(θ)
    log_likelihood_estimate: jax.Array  # scalar log Ẑ(θ), stored when θ was accepted


class PMMHInfo(NamedTuple):
    accepted: jax.Array  # bool
    proposed_position: jax.Array  # θ' [d]
    proposed_log_likelihood: jax.Array  # log Ẑ(θ') (-inf where p(θ') = 0: SMC was not run)


def _check(num_particles: int, num_steps: int, resampling: str, ess_threshold: float) -> None:
    check_num_particles(num_particles)
    checks.count("num_steps", num_steps)
    checks.number("ess_threshold", ess_threshold, 0, 1)
    get_scheme(resampling)


def _position(value: ArrayLike) -> jax.Array:
    """θ as a flat float [d] array, d >= 1; a concrete θ must be finite."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"the position must be a flat [d] array of numbers, got {value!r}")
    position = jnp.asarray(value)
    if position.ndim != 1 or position.shape[0] == 0:
        raise ValueError(f"the position must be a flat [d] array, got shape {position.shape}")
    checks.finite_array("the position", position)
    if not jnp.issubdtype(position.dtype, jnp.floating):
        position = position.astype(jnp.asarray(0.0).dtype)
    return position


def _scale_matrix(step_size: ArrayLike, dim: int, dtype: jnp.dtype) -> jax.Array:
    """L with θ' = θ + L ε: diag(step_size) for a scalar or [d] array, cholesky(Σ) for a
    [d, d] covariance Σ."""
    scale = jnp.asarray(step_size, dtype)
    if scale.ndim == 0 or scale.shape == (dim,):
        if checks.is_concrete(scale):
            values = np.asarray(scale)
            if not (np.isfinite(values).all() and (values >= 0).all() and values.any()):
                raise ValueError(
                    f"step_size must hold finite standard deviations >= 0, not all 0, got "
                    f"{checks.shown(values)}"
                )
        return jnp.diag(jnp.broadcast_to(scale, (dim,)))
    if scale.shape == (dim, dim):
        checks.positive_definite("step_size (a proposal covariance)", scale)
        return jnp.linalg.cholesky(scale)
    raise ValueError(
        f"step_size must be a scalar, a [{dim}] array or a [{dim}, {dim}] covariance, "
        f"got shape {scale.shape}"
    )


def _log_prior(log_prior: LogPrior, position: jax.Array) -> jax.Array:
    value = jnp.asarray(log_prior(position)).reshape(())
    return jnp.where(jnp.isnan(value), -jnp.inf, value)


def log_likelihood_estimate(
    rng_key: jax.Array,
    position: jax.Array,
    log_prior_value: jax.Array,
    model_fn: ModelFn,
    num_particles: int,
    num_steps: int,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
) -> jax.Array:
    """log Ẑ(θ) from one SMC run on `model_fn(θ)`, or -inf without a run where
    `log_prior_value` is -inf; NaN estimates are -inf."""
    _check(num_particles, num_steps, resampling, ess_threshold)

    def estimate() -> jax.Array:
        result = smc.run(
            rng_key,
            model_fn(position),
            num_particles,
            num_steps,
            resampling,
            ess_threshold,
            keep_history=False,
        )
        return jnp.asarray(result.log_evidence, position.dtype).reshape(())

    def impossible() -> jax.Array:
        return jnp.full((), -jnp.inf, position.dtype)

    possible = log_prior_value > -jnp.inf
    value = jax.lax.cond(possible, estimate, impossible)
    return jnp.where(possible & ~jnp.isnan(value), value, -jnp.inf)


def init(
    rng_key: jax.Array,
    position: ArrayLike,
    log_prior: LogPrior,
    model_fn: ModelFn,
    num_particles: int,
    num_steps: int,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
) -> PMMHState:
    """The chain's start: θ_0 = `position` with log p(θ_0) and one SMC estimate log Ẑ(θ_0)
    (-inf, without a run, if θ_0 is outside the prior's support)."""
    _check(num_particles, num_steps, resampling, ess_threshold)
    position = _position(position)
    prior = _log_prior(log_prior, position)
    log_lik = log_likelihood_estimate(
        rng_key, position, prior, model_fn, num_particles, num_steps, resampling, ess_threshold
    )
    return PMMHState(position, prior.astype(position.dtype), log_lik)


def step(
    rng_key: jax.Array,
    state: PMMHState,
    log_prior: LogPrior,
    model_fn: ModelFn,
    num_particles: int,
    num_steps: int,
    step_size: ArrayLike,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
) -> tuple[PMMHState, PMMHInfo]:
    """One PMMH update: propose θ' = θ + L ε, estimate log Ẑ(θ') by SMC, and accept with
    probability min(1, p(θ') Ẑ(θ') / (p(θ) Ẑ(θ))) using the stored Ẑ(θ) of `state`."""
    _check(num_particles, num_steps, resampling, ess_threshold)
    key_propose, key_smc, key_accept = jax.random.split(rng_key, 3)
    position = state.position
    scale = _scale_matrix(step_size, position.shape[0], position.dtype)
    noise = jax.random.normal(key_propose, position.shape, position.dtype)
    proposed = position + scale @ noise
    proposed_prior = _log_prior(log_prior, proposed).astype(position.dtype)
    proposed_log_lik = log_likelihood_estimate(
        key_smc,
        proposed,
        proposed_prior,
        model_fn,
        num_particles,
        num_steps,
        resampling,
        ess_threshold,
    )
    proposed_target = proposed_prior + proposed_log_lik
    current_target = state.log_prior + state.log_likelihood_estimate
    # -inf for an impossible proposal (never accepted), +inf from an impossible current state;
    # never NaN, so the comparison below is always well defined.
    log_ratio = jnp.where(proposed_target > -jnp.inf, proposed_target - current_target, -jnp.inf)
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    log_uniform = jnp.log(jax.random.uniform(key_accept, (), position.dtype))
    accepted = log_uniform < log_ratio
    new_state = PMMHState(
        jnp.where(accepted, proposed, position),
        jnp.where(accepted, proposed_prior, state.log_prior),
        jnp.where(accepted, proposed_log_lik, state.log_likelihood_estimate),
    )
    return new_state, PMMHInfo(accepted, proposed, proposed_log_lik)


def run(
    rng_key: jax.Array,
    initial_position: ArrayLike,
    log_prior: LogPrior,
    model_fn: ModelFn,
    num_iterations: int,
    num_particles: int,
    num_steps: int,
    step_size: ArrayLike,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
) -> tuple[jax.Array, PMMHInfo]:
    """Run `num_iterations` PMMH updates from `initial_position` in one `lax.scan`.

    Returns the positions after each update, [num_iterations, d] (the start is not included;
    discard burn-in yourself), and the per-iteration `PMMHInfo`, leaves stacked on a leading
    axis of size `num_iterations` (`infos.accepted.mean()` is the acceptance rate).

    Args:
        initial_position: θ_0, a flat [d] array (ideally inside the prior's support).
        log_prior: `θ -> log p(θ)` (scalar; -inf outside the support, NaN counts as -inf).
        model_fn: `θ -> FeynmanKac`, the model at θ, whose normalizing constant is the
            likelihood p(y | θ) (e.g. a bootstrap filter).
        num_particles: particles of the SMC run behind each likelihood estimate.
        num_steps: time steps of that run.
        resampling: its resampling scheme (see `ppl.samplers.smc.run`).
        ess_threshold: its resampling threshold.
        step_size: the Gaussian random-walk proposal: a scalar or [d] array of standard
            deviations, or a [d, d] covariance matrix.
    """
    checks.count("num_iterations", num_iterations)
    _check(num_particles, num_steps, resampling, ess_threshold)
    position = _position(initial_position)
    _scale_matrix(step_size, position.shape[0], position.dtype)  # fail early on a bad shape
    key_init, key_chain = jax.random.split(rng_key)
    state = init(
        key_init,
        position,
        log_prior,
        model_fn,
        num_particles,
        num_steps,
        resampling,
        ess_threshold,
    )

    def body(state: PMMHState, key: jax.Array) -> tuple[PMMHState, tuple[jax.Array, PMMHInfo]]:
        new_state, info = step(
            key,
            state,
            log_prior,
            model_fn,
            num_particles,
            num_steps,
            step_size,
            resampling,
            ess_threshold,
        )
        return new_state, (new_state.position, info)

    _, (positions, infos) = jax.lax.scan(body, state, jax.random.split(key_chain, num_iterations))
    return positions, infos
