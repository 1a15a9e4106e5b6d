"""Adaptive tempered SMC from prior to posterior, with HMC rejuvenation (BlackJAX).

The path π_β(x) ∝ p(x) L(x)^β runs from β = 0 (prior draws) to β = 1. Each iteration picks the
next β so that the incremental weights L(x)^{β'−β} keep the effective sample size at
`target_ess · N` (BlackJAX's `adaptive_tempered_smc` solver), resamples, moves every particle
with HMC targeting π_β, and reweights. The evidence estimate is the product of the mean
incremental weights,

    log Ẑ = Σ_t log (1/N) Σ_i L(x_t^i)^{β_t − β_{t−1}},

unbiased for Z on the natural scale. HMC uses an inverse mass matrix equal to the weighted
particle covariance (dense when d ≤ N/10, else its diagonal), so it moves in whitened
coordinates, where a step size near d^(-1/4) suits a Gaussian; the step size starts at half
that and is adapted between iterations toward `target_acceptance_rate` by
log ε ← log ε + (acceptance − target). `waste_free=P` keeps every state of N/P chains of
length P instead of the last state of N chains (Dau & Chopin 2022, BlackJAX's
`waste_free_smc`). After β reaches 1 a last resample-and-move at β = 1 leaves the
particles equally weighted (its evidence increment is exactly 0).

Each HMC move draws its step size uniformly from ε·[1 − j, 1 + j] (`step_size_jitter` j,
default 0.5; Neal 2011, §5.4.2.2). Without it the adapted ε and the fixed leapfrog count can make
the trajectory length a near multiple of half the period of the whitened target's oscillation:
on posteriordb's arK, ε ≈ 1.1 with 8 steps rotates each whitened coordinate by ≈ π per move
(leapfrog angle arccos(1 − ε²/2) ≈ 1.17 rad per step), so a move maps x to about −x and the
moves barely mix; the evidence came out 0.7 nats low (0.16 with the jitter). The defaults
(`target_ess` 0.8, 40 HMC moves of 8 leapfrog steps) were raised from 0.5 and 10 for issue 18
(docs/bayesian.md, "Evidence against bridge sampling").

The settings are one frozen `TemperedSMCSettings`, passed whole. The loop runs on the host,
one compiled iteration at a time, so a tqdm bar shows β; if β has not reached 1 after
`max_iterations`, `TemperingStalledError` says where it stalled. The compiled iteration is
kept per (log prior, log likelihood, settings) for as long as the two functions exist
(`ppl.samplers.programs`), so repeated runs on one model compile once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import resampling as blackjax_resampling
from blackjax.smc import tempered as blackjax_tempered
from blackjax.smc.adaptive_tempered import build_kernel as adaptive_tempered_kernel
from blackjax.smc.base import update_and_take_last
from blackjax.smc.waste_free import waste_free_smc
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from ppl.samplers.programs import ProgramCache

RESAMPLERS: dict[str, Callable] = {
    "systematic": blackjax_resampling.systematic,
    "stratified": blackjax_resampling.stratified,
    "multinomial": blackjax_resampling.multinomial,
    "residual": blackjax_resampling.residual,
}


@dataclass(frozen=True)
class TemperedSMCSettings:
    """How to temper; passed whole to `run` and `build_step` (and hashable, so it keys the
    compiled step).

    target_ess: ESS fraction each new β keeps, in (0, 1).
    num_mcmc_steps / num_integration_steps: HMC moves per iteration and leapfrog steps each.
    initial_step_size: HMC's first step size (None: 0.5 · d^(−1/4)).
    step_size_jitter: j in [0, 1): each move's step size is drawn from ε·U(1 − j, 1 + j).
    target_acceptance_rate: where the step size is steered between iterations.
    waste_free: P for waste-free SMC (N/P chains of length P; P ≥ 2 dividing N), or None.
    resampling: one of `RESAMPLERS`.
    dense_mass_matrix: full weighted particle covariance as HMC's inverse mass matrix rather
        than its diagonal (None: dense when d ≤ N/10); matters for correlated posteriors.
    max_iterations: tempering iterations before `TemperingStalledError`.
    """

    target_ess: float = 0.8
    num_mcmc_steps: int = 40
    num_integration_steps: int = 8
    initial_step_size: float | None = None
    step_size_jitter: float = 0.5
    target_acceptance_rate: float = 0.65
    waste_free: int | None = None
    resampling: str = "systematic"
    dense_mass_matrix: bool | None = None
    max_iterations: int = 500

    def __post_init__(self) -> None:
        if not 0.0 < self.target_ess < 1.0:
            raise ValueError(f"target_ess must be in (0, 1), got {self.target_ess}")
        if self.resampling not in RESAMPLERS:
            raise ValueError(
                f"unknown resampling {self.resampling!r}; choose one of {sorted(RESAMPLERS)}"
            )
        for name in ("num_mcmc_steps", "num_integration_steps", "max_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.initial_step_size is not None and not (
            isinstance(self.initial_step_size, (int, float))
            and math.isfinite(self.initial_step_size)
            and self.initial_step_size > 0
        ):
            raise ValueError(
                f"initial_step_size must be a finite number > 0 or None, "
                f"got {self.initial_step_size!r}"
            )
        if not (
            isinstance(self.step_size_jitter, (int, float)) and 0.0 <= self.step_size_jitter < 1.0
        ):
            raise ValueError(f"step_size_jitter must be in [0, 1), got {self.step_size_jitter!r}")
        if not 0.0 < self.target_acceptance_rate < 1.0:
            raise ValueError(
                f"target_acceptance_rate must be in (0, 1), got {self.target_acceptance_rate}"
            )
        if self.dense_mass_matrix is not None and not isinstance(self.dense_mass_matrix, bool):
            raise ValueError(
                f"dense_mass_matrix must be True, False or None, got {self.dense_mass_matrix!r}"
            )
        if self.waste_free is not None and (
            isinstance(self.waste_free, bool)
            or not isinstance(self.waste_free, int)
            or self.waste_free < 2
        ):
            raise ValueError(f"waste_free={self.waste_free!r} must be an integer >= 2 dividing N")


class TemperedSMCState(NamedTuple):
    """Particles at temperature β, with the running evidence and the HMC step size."""

    smc: blackjax_tempered.TemperedSMCState
    log_evidence: jax.Array
    step_size: jax.Array


class TemperedSMCInfo(NamedTuple):
    """One iteration: the new β, its evidence increment, mean HMC acceptance, the step size
    used, and the ESS fraction (1/N Σ W²)⁻¹/N of the new weights."""

    temperature: jax.Array
    log_evidence_increment: jax.Array
    acceptance_rate: jax.Array
    step_size: jax.Array
    ess: jax.Array


class TemperedSMCResult(NamedTuple):
    """Equally weighted posterior particles [N, ...] and the run's record.

    One entry per iteration: `temperatures[i]` is β after iteration i (β₀ = 0 is not listed;
    the last entry is the extra move at β = 1, so there were len − 1 tempering iterations);
    `acceptance_rates[i]` and `step_sizes[i]` belong to the HMC move of iteration i, which
    targets the previous β (BlackJAX resamples and moves, then reweights to the new β).
    """

    particles: Any
    log_evidence: jax.Array
    temperatures: np.ndarray
    acceptance_rates: np.ndarray
    step_sizes: np.ndarray
    ess: np.ndarray
    seconds: float


class TemperingStalledError(RuntimeError):
    """β did not reach 1 within the iteration cap; `state` is where it stopped."""

    def __init__(self, message: str, state: TemperedSMCState):
        super().__init__(message)
        self.state = state


def _jittered_hmc(jitter: float) -> Callable:
    """BlackJAX's HMC kernel with the step size drawn from ε·U(1 − jitter, 1 + jitter) per move."""
    hmc = blackjax.hmc.build_kernel()
    if jitter == 0.0:
        return hmc

    def kernel(
        rng_key: jax.Array,
        state: Any,
        logdensity_fn: Callable,
        step_size: jax.Array,
        inverse_mass_matrix: jax.Array,
        num_integration_steps: jax.Array,
    ) -> Any:
        jitter_key, move_key = jax.random.split(rng_key)
        scale = jax.random.uniform(jitter_key, minval=1.0 - jitter, maxval=1.0 + jitter)
        return hmc(
            move_key,
            state,
            logdensity_fn,
            step_size * scale,
            inverse_mass_matrix,
            num_integration_steps,
        )

    return kernel


def _inverse_mass_matrix(particles: Any, weights: jax.Array, dense: bool) -> jax.Array:
    """Weighted particle covariance (dense, with a small ridge) or its diagonal."""
    rows = jax.vmap(lambda x: ravel_pytree(x)[0])(particles)
    centred = rows - weights @ rows
    if not dense:
        return jnp.maximum(weights @ centred**2, 1e-12)
    covariance = (centred * weights[:, None]).T @ centred
    ridge = 1e-6 * jnp.maximum(jnp.trace(covariance) / rows.shape[1], 1e-12)
    return covariance + ridge * jnp.eye(rows.shape[1])


def init(particles: Any, step_size: float) -> TemperedSMCState:
    """Start from prior draws (leading particle axis), equally weighted, at β = 0."""
    return TemperedSMCState(
        blackjax.adaptive_tempered_smc.init(particles),
        jnp.zeros(()),
        jnp.asarray(step_size, jnp.float32),
    )


def _check_waste_free(settings: TemperedSMCSettings, num_particles: int) -> None:
    if settings.waste_free is not None and num_particles % settings.waste_free:
        raise ValueError(
            f"waste_free={settings.waste_free} must be >= 2 and divide "
            f"num_particles={num_particles}"
        )


def build_step(
    log_prior_fn: Callable, log_likelihood_fn: Callable, settings: TemperedSMCSettings
) -> Callable[[jax.Array, TemperedSMCState, bool], tuple[TemperedSMCState, TemperedSMCInfo]]:
    """`step(rng_key, state, final)`: one adaptive tempering iteration (or, with
    `final=True`, a resample-and-move at β = 1 that adds nothing to the evidence).

    N and d are read from `state`'s shapes when the step is traced, so one step serves every
    population size (the waste-free strategy and the default mass-matrix form depend on them).
    `settings.initial_step_size` and `settings.max_iterations` belong to `run`'s loop.
    """

    def step(
        rng_key: jax.Array, state: TemperedSMCState, final: bool = False
    ) -> tuple[TemperedSMCState, TemperedSMCInfo]:
        leaves = jax.tree.leaves(state.smc.particles)
        num_particles = leaves[0].shape[0]
        dimension = sum(math.prod(leaf.shape[1:]) for leaf in leaves)
        _check_waste_free(settings, num_particles)
        if settings.waste_free is None:
            strategy = update_and_take_last
            steps: int | None = settings.num_mcmc_steps
        else:
            strategy = waste_free_smc(num_particles, settings.waste_free)
            steps = None
        common = dict(
            mcmc_step_fn=_jittered_hmc(float(settings.step_size_jitter)),
            mcmc_init_fn=blackjax.hmc.init,
            resampling_fn=RESAMPLERS[settings.resampling],
            update_strategy=strategy,
        )
        dense = (
            dimension <= num_particles // 10
            if settings.dense_mass_matrix is None
            else settings.dense_mass_matrix
        )
        parameters = {
            "step_size": state.step_size[None],
            "inverse_mass_matrix": _inverse_mass_matrix(
                state.smc.particles, state.smc.weights, dense
            )[None],
            "num_integration_steps": jnp.array([settings.num_integration_steps]),
        }
        if final:
            fixed = blackjax.tempered_smc.build_kernel(log_prior_fn, log_likelihood_fn, **common)
            smc_state, info = fixed(rng_key, state.smc, steps, 1.0, parameters)
        else:
            adaptive = adaptive_tempered_kernel(
                log_prior_fn, log_likelihood_fn, target_ess=settings.target_ess, **common
            )
            smc_state, info = adaptive(rng_key, state.smc, steps, parameters)
        acceptance = jnp.mean(info.update_info.acceptance_rate)
        new_step_size = state.step_size * jnp.exp(acceptance - settings.target_acceptance_rate)
        increment = jnp.where(final, 0.0, info.log_likelihood_increment)
        new_state = TemperedSMCState(smc_state, state.log_evidence + increment, new_step_size)
        ess = 1.0 / jnp.sum(smc_state.weights**2) / smc_state.weights.shape[0]
        return new_state, TemperedSMCInfo(
            jnp.asarray(smc_state.tempering_param), increment, acceptance, state.step_size, ess
        )

    return step


def _jitted_step(functions: tuple[Callable, Callable], settings: TemperedSMCSettings) -> Callable:
    return jax.jit(build_step(*functions, settings), static_argnums=2)


# The jitted step per (log prior, log likelihood, settings), alive while both functions are.
_STEPS = ProgramCache(_jitted_step)


def run(
    rng_key: jax.Array,
    log_prior_fn: Callable,
    log_likelihood_fn: Callable,
    initial_particles: Any,
    settings: TemperedSMCSettings = TemperedSMCSettings(),
    *,
    progress: bool = True,
) -> TemperedSMCResult:
    """Temper `initial_particles` (prior draws, leading axis N) to the posterior.

    Raises `TemperingStalledError` if β < 1 after `settings.max_iterations` iterations.
    Repeated runs on the same functions and settings reuse the compiled step (see
    `ppl.samplers.programs`).
    """
    leaves = jax.tree.leaves(initial_particles)
    if not leaves:
        raise ValueError("initial_particles is empty")
    num_particles = leaves[0].shape[0]
    dimension = sum(leaf[0].size for leaf in leaves)
    _check_waste_free(settings, num_particles)
    # The step does not depend on the loop's settings: one program for any of them.
    loop_free = replace(settings, initial_step_size=None, max_iterations=1)
    step = _STEPS.get((log_prior_fn, log_likelihood_fn), loop_free)
    initial_step_size = settings.initial_step_size
    if initial_step_size is None:
        initial_step_size = 0.5 * float(dimension) ** -0.25
    max_iterations = settings.max_iterations
    state = init(initial_particles, initial_step_size)
    infos: list[TemperedSMCInfo] = []
    start = time.perf_counter()
    with tqdm(total=1.0, desc="tempering β", disable=not progress, leave=False) as bar:
        key = rng_key
        while float(state.smc.tempering_param) < 1.0:
            if len(infos) >= max_iterations:
                beta = float(state.smc.tempering_param)
                raise TemperingStalledError(
                    f"tempered SMC stalled: β = {beta:.3g} after {max_iterations} iterations "
                    f"(last increments {[float(i.temperature) for i in infos[-3:]]}); use more "
                    "particles, more MCMC steps, a lower target_ess, or raise max_iterations",
                    state,
                )
            key, step_key = jax.random.split(key)
            previous = float(state.smc.tempering_param)
            state, info = step(step_key, state, False)
            if not np.isfinite(float(state.log_evidence)):
                raise FloatingPointError(
                    f"log evidence became {float(state.log_evidence)} at β = "
                    f"{float(info.temperature):.3g}: the log likelihood is not finite for some "
                    "particles"
                )
            infos.append(info)
            bar.update(float(info.temperature) - previous)
            bar.set_postfix(acceptance=f"{float(info.acceptance_rate):.2f}")
        key, step_key = jax.random.split(key)
        state, info = step(step_key, state, True)
        infos.append(info)
    jax.block_until_ready(state)
    return TemperedSMCResult(
        particles=state.smc.particles,
        log_evidence=state.log_evidence,
        temperatures=np.asarray([float(i.temperature) for i in infos]),
        acceptance_rates=np.asarray([float(i.acceptance_rate) for i in infos]),
        step_sizes=np.asarray([float(i.step_size) for i in infos]),
        ess=np.asarray([float(i.ess) for i in infos]),
        seconds=time.perf_counter() - start,
    )
