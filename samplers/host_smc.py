"""SMC driven from the host for `HostFeynmanKac` models: G particle systems in one batch.

The same algorithm as `ppl.samplers.smc` (resample when ESS < threshold x N, propagate, reweight,
accumulate log Z_hat = Σ_t log Σ_i W_{t-1}^{a_i} G_t^i), applied to each of G groups of N
particles independently while their rows share one batch, with the transition and potential
called from Python between compiled pieces. The pieces are the jitted sampler's own: the ESS
decision (`weighting.needs_resampling`, in float64 on the host), the masked resampling
(`resampling.resample_where`) and the reweighting (`weighting.reweight`), the last two jitted and
vmapped over groups. Rows are group-major: row g * N + i is particle i of group g, and ancestors are
always drawn within a group.

`init`, `step` and `run` mirror `ppl.samplers.smc`: `run(rng_key, model, num_particles,
num_steps)` draws x_0 with the key `fold_in(rng_key, 0)` and takes step t with
`fold_in(rng_key, t)`, for t = 1..num_steps-1, stopping early once every row is finished
(absorbed particles keep their weights). Each group reports its own diagnostics: a group
whose weights are all zero at a step is flagged (`all_dead`) and its log-evidence becomes
-inf; NaN potentials are counted and treated as zero weight. Neither stops the other groups.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ppl import checks
from ppl.feynman_kac import HostFeynmanKac, Particles, group_keys
from ppl.samplers.resampling import get_scheme, resample_where
from ppl.samplers.weighting import Reweighted, check_num_particles, needs_resampling, reweight


class HostSMCState(NamedTuple):
    particles: Particles  # B = G x N rows, group-major
    log_weights: np.ndarray  # [G, N] normalized per group
    log_evidence: np.ndarray  # [G] running log Z_hat per group
    step: int  # the time index t of `particles`


class HostSMCInfo(NamedTuple):
    ancestors: np.ndarray  # [B] global parent row of each row (identity when not resampled)
    resampled: np.ndarray  # [G] bool
    ess: np.ndarray  # [G] effective sample size after reweighting
    log_evidence_increment: np.ndarray  # [G]
    num_nan: np.ndarray  # [G] NaN potentials, counted as zero weight
    all_dead: np.ndarray  # [G] bool: every weight of the group was zero


class HostSMCResult(NamedTuple):
    state: HostSMCState
    infos: list[HostSMCInfo]  # one per step taken, t = 1, 2, ...

    @property
    def log_evidence(self) -> np.ndarray:
        return self.state.log_evidence

    @property
    def log_weights(self) -> np.ndarray:
        return self.state.log_weights

    @property
    def all_dead(self) -> np.ndarray:
        """[G] bool: the group lost every particle at some step."""
        if not self.infos:
            return np.zeros(self.state.log_evidence.shape, bool)
        return np.any([info.all_dead for info in self.infos], axis=0)


@functools.partial(jax.jit, static_argnames=("scheme",))
def _resample_groups(
    keys: jax.Array, log_weights: jax.Array, do_resample: jax.Array, scheme: str
) -> jax.Array:
    """Global ancestors [G * N]: within-group draws (group g with `keys[g]`) where
    `do_resample`, identity elsewhere."""
    num_groups, num_particles = log_weights.shape
    local = jax.vmap(lambda k, lw, do: resample_where(k, lw, do, scheme))(
        keys, log_weights, do_resample
    )
    offsets = (jnp.arange(num_groups, dtype=jnp.int32) * num_particles)[:, None]
    return (local + offsets).reshape(-1)


_reweight_groups = jax.jit(jax.vmap(reweight))


def survivors_in_place(ancestors: np.ndarray, num_particles: int) -> np.ndarray:
    """Relabel global ancestors [B] within each group of `num_particles` rows so that every
    row with offspring keeps one copy in its own slot (a_j = j); the extra copies fill the
    slots of rows without offspring, in order.

    A permutation of the particle labels within a group, so the particle system has the same
    law (particles are exchangeable after resampling); it lets a model gather in place by
    overwriting only the rows that died (`ppl.models.reasoning` copies a KV-cache row only then).
    """
    out = np.array(ancestors)
    for start in range(0, out.shape[0], num_particles):
        group = out[start : start + num_particles]
        counts = np.bincount(group - start, minlength=num_particles)
        slots = np.arange(start, start + num_particles)
        survivors = slots[counts > 0]
        extra = np.repeat(slots, np.maximum(counts - 1, 0))
        relabelled = slots.copy()
        relabelled[counts == 0] = extra
        relabelled[survivors - start] = survivors
        out[start : start + num_particles] = relabelled
    return out


def init(
    rng_key: jax.Array, model: HostFeynmanKac, num_particles: int
) -> tuple[HostSMCState, HostSMCInfo]:
    """Draw x_0 ~ M_0 for G x `num_particles` rows and weight each group by G_0."""
    num_particles = check_num_particles(num_particles)
    particles = model.initial_sample(rng_key, num_particles)
    return weigh_initial(model, particles, num_particles)


def weigh_initial(
    model: HostFeynmanKac, particles: Particles, num_particles: int
) -> tuple[HostSMCState, HostSMCInfo]:
    """The state at t = 0 of initial rows `particles`, weighted by the model's log G_0."""
    num_rows = jax.tree.leaves(particles)[0].shape[0]
    num_groups = model.num_groups
    if num_rows != num_groups * num_particles:
        raise ValueError(
            f"{num_rows} initial rows do not split into {num_groups} equal groups of "
            f"{num_particles} particles"
        )
    log_potentials = np.asarray(model.initial_log_potential(particles), np.float32)
    uniform = jnp.full((num_groups, num_particles), -jnp.log(num_particles))
    new = _reweight_groups(uniform, jnp.asarray(log_potentials).reshape(num_groups, -1))
    state = HostSMCState(particles, np.asarray(new.log_weights), np.asarray(new.log_increment), 0)
    return state, _info(np.arange(num_rows), np.zeros(num_groups, bool), new)


def _info(ancestors: np.ndarray, resampled: np.ndarray, new: Reweighted) -> HostSMCInfo:
    return HostSMCInfo(
        ancestors=np.asarray(ancestors),
        resampled=np.asarray(resampled),
        ess=np.asarray(new.ess),
        log_evidence_increment=np.asarray(new.log_increment),
        num_nan=np.asarray(new.num_nan),
        all_dead=np.asarray(new.all_dead),
    )


def reweight_step(
    state: HostSMCState,
    model: HostFeynmanKac,
    particles: Particles,
    extended: Particles,
    log_weights: np.ndarray,
    ancestors: np.ndarray,
    resampled: np.ndarray,
) -> tuple[HostSMCState, HostSMCInfo]:
    """Weight the step `particles -> extended` by the model's log potentials, starting from
    the groups' `log_weights` [G, N] after resampling, and advance `state`."""
    num_groups = log_weights.shape[0]
    t = state.step + 1
    log_potentials = np.asarray(model.log_potential(t, particles, extended), np.float32)
    infinite = np.flatnonzero(np.isposinf(log_potentials))
    if infinite.size:  # not a log weight of a likelihood ratio: a bug in the model
        raise ValueError(
            f"host_smc: the model's log potential is +inf at step {t} for rows "
            f"{infinite[:10].tolist()}; potentials must be finite or -inf (NaN counts as -inf)"
        )
    new = _reweight_groups(
        jnp.asarray(log_weights, jnp.float32), jnp.asarray(log_potentials).reshape(num_groups, -1)
    )
    new_state = HostSMCState(
        extended,
        np.asarray(new.log_weights),
        state.log_evidence + np.asarray(new.log_increment),
        t,
    )
    return new_state, _info(ancestors, resampled, new)


def run_steps(
    rng_key: jax.Array,
    state: HostSMCState,
    model: HostFeynmanKac,
    num_steps: int,
    advance: Callable[[jax.Array, HostSMCState], tuple[HostSMCState, HostSMCInfo]],
    description: str,
    progress: bool,
) -> HostSMCResult:
    """The host run loop: apply `advance` with key `fold_in(rng_key, t)` at t = 1..num_steps-1
    until every row is finished, with a progress bar."""
    infos = []
    with tqdm(total=num_steps - 1, desc=description, disable=not progress, leave=False) as bar:
        for t in range(1, num_steps):
            if np.all(model.finished(state.particles)):
                break
            state, info = advance(jax.random.fold_in(rng_key, t), state)
            infos.append(info)
            bar.update(1)
    return HostSMCResult(state, infos)


def check_run(num_steps: int, resampling: str = "systematic", ess_threshold: float = 0.5) -> None:
    """Fail early on arguments a host run cannot use."""
    checks.count("num_steps", num_steps)
    checks.number("ess_threshold", ess_threshold, 0, 1)
    get_scheme(resampling)


def step(
    rng_key: jax.Array,
    state: HostSMCState,
    model: HostFeynmanKac,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
) -> tuple[HostSMCState, HostSMCInfo]:
    """One resample-propagate-reweight step from time t - 1 to t for every group."""
    get_scheme(resampling)
    key_resample, key_extend = jax.random.split(rng_key)
    num_groups, num_particles = state.log_weights.shape
    do_resample = np.asarray(needs_resampling(state.log_weights, ess_threshold))
    particles, log_weights = state.particles, state.log_weights
    ancestors = np.arange(num_groups * num_particles)
    if do_resample.any():  # concrete host values: skip the gather when no group resamples
        ancestors = survivors_in_place(
            np.asarray(
                _resample_groups(
                    group_keys(key_resample, model),
                    jnp.asarray(log_weights),
                    jnp.asarray(do_resample),
                    resampling,
                )
            ),
            num_particles,
        )
        particles = model.gather(particles, jnp.asarray(ancestors))
        log_weights = np.where(do_resample[:, None], -np.log(num_particles), log_weights)
    extended = model.transition_sample(key_extend, state.step + 1, particles)
    return reweight_step(state, model, particles, extended, log_weights, ancestors, do_resample)


def run(
    rng_key: jax.Array,
    model: HostFeynmanKac,
    num_particles: int,
    num_steps: int,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    progress: bool = True,
) -> HostSMCResult:
    """Run SMC on G groups of `num_particles` for time steps t = 0..num_steps-1, or until
    every row is finished.

    Args:
        ess_threshold: resample a group when its ESS < ess_threshold * N (1.0: every step).
    x_0 is drawn with `fold_in(rng_key, 0)` and step t uses `fold_in(rng_key, t)`, so a run is
    reproducible from its key.
    """
    check_run(num_steps, resampling, ess_threshold)
    state, _ = init(jax.random.fold_in(rng_key, 0), model, num_particles)

    def advance(key: jax.Array, state: HostSMCState) -> tuple[HostSMCState, HostSMCInfo]:
        return step(key, state, model, resampling, ess_threshold)

    return run_steps(rng_key, state, model, num_steps, advance, "SMC steps", progress)
