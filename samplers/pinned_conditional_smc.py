"""Conditional SMC for models that pin their own reference: particle 0 follows a given path.

`ppl.samplers.conditional_smc` stores the reference path's states and writes them into the
particle batch; that needs every state of the path in memory, which is too much when a state
holds a language model's KV cache. Here the model does the pinning instead: its transition
forces particle 0 along the reference (for a token-level LM, it feeds the reference's next
token rather than drawing one), and the sampler only has to keep particle 0's ancestor fixed:

1. t = 0: x_0^i ~ M_0 (particle 0 is the reference's x'_0 by the model's construction);
2. t >= 1: ancestors a^i ~ Multinomial(W_{t-1}) for i >= 1 and a^0 = 0; x_t ~ M_t (particle 0
   forced); w_t^i = G_t(x_{t-1}^{a^i}, x_t^i) (uniform weights before, since every step
   resamples); log Ẑ = Σ_t log (1/N) Σ_i w_t^i.

With the reference drawn from the target, E[log Ẑ] >= log Z (the evidence upper bound of
Zhao et al. 2024, the mirror image of plain SMC's E[log Ẑ] <= log Z), so running both brackets
log Z. Finished particles are absorbed as in `ppl.samplers.smc`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppl.feynman_kac import FeynmanKac, check_horizon, gather_particles
from ppl.samplers import smc
from ppl.samplers.resampling import resample
from ppl.samplers.smc import SMCInfo, SMCResult, SMCState
from ppl.samplers.weighting import reweight


def init(rng_key: jax.Array, model: FeynmanKac, num_particles: int) -> tuple[SMCState, SMCInfo]:
    """x_0 ~ M_0 weighted by G_0, as `ppl.samplers.smc.init`."""
    return smc.init(rng_key, model, num_particles)


def step(rng_key: jax.Array, state: SMCState, model: FeynmanKac) -> tuple[SMCState, SMCInfo]:
    """Resample the free particles, keep particle 0's lineage, propagate and reweight."""
    key_resample, key_move = jax.random.split(rng_key)
    num_particles = state.log_weights.shape[0]
    ancestors = resample(key_resample, state.log_weights, num_particles, "multinomial")
    ancestors = ancestors.at[0].set(0)
    parents = gather_particles(model, state.particles, ancestors)
    t = state.step + 1
    particles, log_potentials, _ = smc.propagate(key_move, t, model, parents)
    uniform = jnp.full((num_particles,), -jnp.log(num_particles))
    new = reweight(uniform, log_potentials)
    new_state = SMCState(particles, new.log_weights, state.log_evidence + new.log_increment, t)
    resampled = jnp.ones((), bool)
    info = SMCInfo(
        ancestors, resampled, new.ess, new.log_increment, new.num_nan, new.all_dead, new.num_inf
    )
    return new_state, info


def run(rng_key: jax.Array, model: FeynmanKac, num_particles: int, num_steps: int) -> SMCResult:
    """Conditional SMC for time steps t = 0..num_steps-1 in one `lax.scan` (no history kept)."""
    if num_particles < 2:
        raise ValueError(f"conditional SMC needs at least 2 particles, got {num_particles}")
    check_horizon(model, num_steps)
    loop = smc.scan_run(
        rng_key,
        lambda key: smc.init(key, model, num_particles),
        lambda key, state: step(key, state, model),
        num_steps,
    )
    info = jax.tree.map(smc.prepend_initial, loop.initial_info, loop.infos)
    return SMCResult(loop.final, info, None, loop.log_weights)
