"""Sequential Monte Carlo over a `FeynmanKac` model: `init`, `step` and the `run` loop.

With normalized weights W_{t-1} and potentials G_t, one step

1. resamples ancestors a_i ~ W_{t-1} when ESS(W_{t-1}) < ess_threshold * N (else a_i = i and
   the weights carry over),
2. proposes x_t^i ~ M_t(x_{t-1}^{a_i}, .) (finished particles are absorbed: kept, G_t = 1),
3. reweights w_t^i = W_{t-1}^{a_i} G_t(x_{t-1}^{a_i}, x_t^i) (W after resampling is 1/N), and
4. multiplies the evidence estimate by Σ_i w_t^i:  log Z_t = log Z_{t-1} + log Σ_i w_t^i.

At t = 0, log Z_0 = log( (1/N) Σ_i G_0(x_0^i) ). Z_T is an unbiased estimate of the model's
normalizing constant for every resampling scheme and threshold. The resampling decision is a
traced `lax.cond`, never Python control flow. A step whose weights are all zero sets
`all_dead`; its evidence estimate is then 0 (log -inf) and the weights restart uniform. NaN
potentials count as zero weight and are counted in `num_nan`. A +inf log potential is no
valid weight: it is counted in `num_inf` (log Z = +inf, not `all_dead`), and `run` raises a
ValueError naming the step when called outside `jax.jit`. `num_particles` must be an int >= 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl import checks
from ppl.feynman_kac import FeynmanKac, Particles, check_horizon, gather_particles
from ppl.samplers.resampling import get_scheme, resample_where
from ppl.samplers.weighting import (
    check_no_inf,
    check_num_particles,
    needs_resampling,
    reweight,
    select,
)


class SMCState(NamedTuple):
    particles: Particles  # leaves [N, ...]
    log_weights: jax.Array  # [N], normalized (logsumexp = 0)
    log_evidence: jax.Array  # scalar running log Z estimate
    step: jax.Array  # scalar int, the time index t of `particles`


class SMCInfo(NamedTuple):
    ancestors: jax.Array  # [N] index of each particle's parent at t - 1 (identity at t = 0)
    resampled: jax.Array  # bool: whether this step resampled
    ess: jax.Array  # effective sample size after reweighting
    log_evidence_increment: jax.Array  # log Σ_i w_t^i
    num_nan: jax.Array  # potentials that were NaN (treated as zero weight)
    all_dead: jax.Array  # bool: every weight was zero
    num_inf: jax.Array  # potentials that were +inf (`run` raises on them outside jit)


class SMCResult(NamedTuple):
    state: SMCState  # the final state
    info: SMCInfo  # per step, leaves stacked on a leading time axis of size T
    particles: Any  # particle history [T, N, ...] (or its `record`) when kept
    log_weights: jax.Array  # [T, N] normalized log weights per step

    @property
    def log_evidence(self) -> jax.Array:
        return self.state.log_evidence


def init(rng_key: jax.Array, model: FeynmanKac, num_particles: int) -> tuple[SMCState, SMCInfo]:
    """Draw x_0 ~ M_0 and weight it by G_0."""
    num_particles = check_num_particles(num_particles)
    particles = model.initial_sample(rng_key, num_particles)
    uniform = jnp.full((num_particles,), -jnp.log(num_particles))
    new = reweight(uniform, model.initial_log_potential(particles))
    state = SMCState(particles, new.log_weights, new.log_increment, jnp.zeros((), jnp.int32))
    info = SMCInfo(
        jnp.arange(num_particles, dtype=jnp.int32),
        jnp.zeros((), bool),
        new.ess,
        new.log_increment,
        new.num_nan,
        new.all_dead,
        new.num_inf,
    )
    return state, info


def propagate(
    rng_key: jax.Array, t: jax.Array, model: FeynmanKac, parents: Particles
) -> tuple[Particles, jax.Array, jax.Array]:
    """x_t ~ M_t(parents) and log G_t, with finished parents absorbed (kept, log G_t = 0).

    Returns the particles, their log potentials and which parents were finished [N].
    """
    particles = model.transition_sample(rng_key, t, parents)
    log_potentials = model.log_potential(t, parents, particles)
    if model.finished is None:
        return particles, log_potentials, jnp.zeros(log_potentials.shape, bool)
    done = model.finished(parents)
    if model.gather is None:  # otherwise the model keeps finished particles itself
        particles = select(done, parents, particles)
    return particles, jnp.where(done, 0.0, log_potentials), done


def prepend_initial(first: jax.Array, rest: jax.Array) -> jax.Array:
    """Stack the t = 0 value `first` before the scanned values `rest` [T - 1, ...]."""
    return jnp.concatenate([first[None], rest], axis=0)


def step(
    rng_key: jax.Array,
    state: SMCState,
    model: FeynmanKac,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
) -> tuple[SMCState, SMCInfo]:
    """One resample-propose-reweight step from time t - 1 to t."""
    get_scheme(resampling)  # fail early on a bad name
    checks.number("ess_threshold", ess_threshold, 0, 1)
    key_resample, key_move = jax.random.split(rng_key)
    num_particles = state.log_weights.shape[0]
    do_resample = needs_resampling(state.log_weights, ess_threshold)
    ancestors = resample_where(key_resample, state.log_weights, do_resample, resampling)
    parents = jax.lax.cond(
        do_resample,
        lambda: gather_particles(model, state.particles, ancestors),
        lambda: state.particles,
    )
    log_weights = jnp.where(do_resample, -jnp.log(num_particles), state.log_weights)
    t = state.step + 1
    particles, log_potentials, _ = propagate(key_move, t, model, parents)
    new = reweight(log_weights, log_potentials)
    new_state = SMCState(particles, new.log_weights, state.log_evidence + new.log_increment, t)
    info = SMCInfo(
        ancestors, do_resample, new.ess, new.log_increment, new.num_nan, new.all_dead, new.num_inf
    )
    return new_state, info


class ScanRun(NamedTuple):
    """What `scan_run` gives back: the t = 0 state and info, the final state, and per step
    t = 1..T-1 the infos, the kept particles and the log weights."""

    initial: Any  # the state at t = 0
    initial_info: Any
    final: Any  # the state at t = T - 1
    infos: Any  # leaves stacked on a leading axis of size T - 1
    history: Any  # `keep(particles)` of t = 1..T-1, stacked (None when nothing is kept)
    log_weights: jax.Array  # [T, N] normalized log weights, t = 0 included


def scan_run(
    rng_key: jax.Array,
    init_fn: Callable[[jax.Array], tuple[Any, Any]],
    step_fn: Callable[[jax.Array, Any], tuple[Any, Any]],
    num_steps: int,
    keep: Callable[[Particles], Any] | None = None,
) -> ScanRun:
    """The run loop of the jitted particle samplers, in one `lax.scan`: with
    `key_init, key_steps = split(rng_key)`, the state at t = 0 is `init_fn(key_init)` and the
    state at t >= 1 is `step_fn(key_t, state)` for the keys `split(key_steps, num_steps - 1)`.
    States have `particles` and `log_weights`; `keep(particles)` (default: nothing) is kept
    for every step."""
    num_steps = checks.count("num_steps", num_steps)
    key_init, key_steps = jax.random.split(rng_key)
    state, info0 = init_fn(key_init)

    def body(state: Any, key: jax.Array) -> tuple[Any, tuple]:
        new_state, info = step_fn(key, state)
        kept = None if keep is None else keep(new_state.particles)
        return new_state, (info, kept, new_state.log_weights)

    keys = jax.random.split(key_steps, num_steps - 1)
    final, (infos, history, log_weights) = jax.lax.scan(body, state, keys)
    return ScanRun(
        state, info0, final, infos, history, prepend_initial(state.log_weights, log_weights)
    )


def run(
    rng_key: jax.Array,
    model: FeynmanKac,
    num_particles: int,
    num_steps: int,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    keep_history: bool = True,
    record: Callable[[Particles], Any] | None = None,
) -> SMCResult:
    """Run SMC for time steps t = 0..num_steps-1 in one `lax.scan` (wrap in `jax.jit` or
    `jax.vmap` freely; `model` and the keyword arguments are static).

    Args:
        ess_threshold: resample when ESS < ess_threshold * N; 1.0 resamples at every step
            (except after exactly uniform weights, where resampling changes nothing).
        keep_history: keep every step's particles (needed for genealogy and smoothing).
        record: keep `record(particles)` of every step instead of the whole particles (a
            small summary of particles too large to keep); implies keeping a history.
    """
    num_particles = check_num_particles(num_particles)
    checks.number("ess_threshold", ess_threshold, 0, 1)
    check_horizon(model, num_steps)
    get_scheme(resampling)

    def keep(particles: Particles) -> Any:
        if record is not None:
            return record(particles)
        return particles if keep_history else None

    loop = scan_run(
        rng_key,
        lambda key: init(key, model, num_particles),
        lambda key, state: step(key, state, model, resampling, ess_threshold),
        num_steps,
        keep,
    )
    info = jax.tree.map(prepend_initial, loop.initial_info, loop.infos)
    check_no_inf(info.num_inf, "smc")
    kept_first = keep(loop.initial.particles)
    particles = (
        None if kept_first is None else jax.tree.map(prepend_initial, kept_first, loop.history)
    )
    return SMCResult(loop.final, info, particles, loop.log_weights)
