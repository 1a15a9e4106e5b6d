"""SMC steer: each particle proposes K children, and N of the N·K children survive by
resampling without replacement (Lew et al. 2023's beam-like SMC, with Fearnhead and
Clifford's 2003 optimal resampling).

One step from normalized weights W_{t-1}:

1. every live particle i is copied K times and each copy is extended, x_t^{ik} ~ M_t; a
   finished particle is absorbed once (its first copy keeps W_{t-1}^i, the others get weight 0);
2. child weights w^{ik} = (W_{t-1}^i / K) G_t(x_{t-1}^i, x_t^{ik}), and
   log Z_t = log Z_{t-1} + log Σ w^{ik}  (the same unbiased estimate as standard SMC);
3. with the w normalized, the threshold c solves Σ min(c w_j, 1) = N. Children with
   c w_j >= 1 survive deterministically with their own weight; the other N - L slots are filled
   by systematic resampling among the rest, each with weight 1 / c. Every child's expected
   weight after the step is its weight before, and the total weight is preserved exactly.
   When at most N children have positive weight, all of them survive (the empty slots carry
   weight zero).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.diagnostics import effective_sample_size_normalized
from ppl.feynman_kac import FeynmanKac, gather_particles
from ppl.samplers import smc
from ppl.samplers.smc import SMCInfo, SMCState
from ppl.samplers.weighting import check_no_inf, check_num_particles, reweight


class SMCSteerInfo(NamedTuple):
    parents: jax.Array  # [N] index of each survivor's parent at t - 1
    num_kept: jax.Array  # children kept deterministically (c w >= 1)
    ess: jax.Array  # effective sample size of the survivors' weights
    log_evidence_increment: jax.Array  # log Σ_j w^j
    num_nan: jax.Array
    all_dead: jax.Array
    num_inf: jax.Array  # +inf potentials (`run` raises on them outside jit)


class SMCSteerResult(NamedTuple):
    state: SMCState
    info: SMCSteerInfo  # per step t = 1..T-1, stacked on a leading axis
    log_weights: jax.Array  # [T, N] normalized log weights per step

    @property
    def log_evidence(self) -> jax.Array:
        return self.state.log_evidence


def resample_without_replacement(
    rng_key: jax.Array, log_weights: jax.Array, num_samples: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fearnhead-Clifford resampling of `num_samples` out of M >= num_samples candidates.

    Returns indices [num_samples], their normalized log weights and the number kept
    deterministically.
    """
    weights = jax.nn.softmax(log_weights)
    order = jnp.argsort(-weights)
    ranked = weights[order]
    # tail[l] = Σ_{j >= l} ranked[j]; with the top l kept, c_l = (N - l) / tail[l]
    tail = jnp.cumsum(ranked[::-1])[::-1]
    kept_range = jnp.arange(num_samples)
    threshold = (num_samples - kept_range) / tail[:num_samples]
    consistent = threshold * ranked[:num_samples] < 1
    num_positive = jnp.sum(weights > 0)
    num_kept = jnp.where(
        num_positive <= num_samples, num_positive, jnp.argmax(consistent).astype(jnp.int32)
    )
    rest_mass = tail[jnp.minimum(num_kept, tail.shape[0] - 1)]
    num_rest = num_samples - num_kept
    # systematic points among the ranked tail, one per empty slot
    rest = jnp.where(jnp.arange(ranked.shape[0]) >= num_kept, ranked, 0.0)
    cumulative = jnp.cumsum(rest) / jnp.where(rest_mass > 0, rest_mass, 1.0)
    uniform = jax.random.uniform(rng_key)
    slot = kept_range - num_kept
    points = (slot + uniform) / jnp.maximum(num_rest, 1)
    drawn = jnp.minimum(jnp.searchsorted(cumulative, points, side="right"), ranked.shape[0] - 1)
    is_kept = kept_range < num_kept
    position = jnp.where(is_kept, kept_range, drawn)
    rest_weight = jnp.where(num_positive <= num_samples, 0.0, rest_mass / jnp.maximum(num_rest, 1))
    new_weights = jnp.where(
        is_kept, ranked[jnp.minimum(kept_range, ranked.shape[0] - 1)], rest_weight
    )
    return order[position], jnp.log(new_weights), num_kept


def init(rng_key: jax.Array, model: FeynmanKac, num_particles: int) -> tuple[SMCState, SMCInfo]:
    """x_0 ~ M_0 weighted by G_0, as `ppl.samplers.smc.init`."""
    return smc.init(rng_key, model, num_particles)


def step(
    rng_key: jax.Array, state: SMCState, model: FeynmanKac, num_beams: int
) -> tuple[SMCState, SMCSteerInfo]:
    """Extend every particle `num_beams` times, then keep N of the N·K children."""
    key_move, key_select = jax.random.split(rng_key)
    num_particles = state.log_weights.shape[0]
    parent_of = jnp.repeat(jnp.arange(num_particles, dtype=jnp.int32), num_beams)
    parents = gather_particles(model, state.particles, parent_of)
    t = state.step + 1
    children, log_potentials, done = smc.propagate(key_move, t, model, parents)
    first_copy = jnp.arange(parent_of.shape[0]) % num_beams == 0
    share = jnp.where(done, jnp.where(first_copy, 0.0, -jnp.inf), -jnp.log(num_beams))
    new = reweight(state.log_weights[parent_of] + share, log_potentials)
    chosen, log_weights, num_kept = resample_without_replacement(
        key_select, new.log_weights, num_particles
    )
    survivors = gather_particles(model, children, chosen)
    ess = effective_sample_size_normalized(log_weights)
    new_state = SMCState(survivors, log_weights, state.log_evidence + new.log_increment, t)
    info = SMCSteerInfo(
        parent_of[chosen], num_kept, ess, new.log_increment, new.num_nan, new.all_dead, new.num_inf
    )
    return new_state, info


def run(
    rng_key: jax.Array, model: FeynmanKac, num_particles: int, num_steps: int, num_beams: int
) -> SMCSteerResult:
    """SMC steer for time steps t = 0..num_steps-1 in one `lax.scan`."""
    num_particles = check_num_particles(num_particles)
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    loop = smc.scan_run(
        rng_key,
        lambda key: smc.init(key, model, num_particles),
        lambda key, state: step(key, state, model, num_beams),
        num_steps,
    )
    check_no_inf(
        jnp.concatenate([loop.initial_info.num_inf[None], loop.infos.num_inf]), "smc_steer"
    )
    return SMCSteerResult(loop.final, loop.infos, loop.log_weights)
