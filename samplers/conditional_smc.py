"""Conditional SMC: the particle-Gibbs kernel, with optional ancestor sampling.

Given a reference path x'_{0:T} (leaves [T, ...]; here T counts time steps, t = 0..T-1),
conditional SMC (Andrieu, Doucet and Holenstein 2010) runs an SMC sampler on the
`FeynmanKac` model in which one particle, index r (`reference_index`, 0 by default), is
pinned to the reference:

1. t = 0: x_0^i ~ M_0 for i != r, x_0^r = x'_0; w_0^i = G_0(x_0^i).
2. t >= 1: the N - 1 free particles draw ancestors a_t^i ~ W_{t-1} (multinomially,
   independently; resampling happens at every step) and propose x_t^i ~ M_t(x_{t-1}^{a_t^i}, .);
   the reference keeps its value x_t^r = x'_t, and its ancestor is
   - without ancestor sampling: a_t^r = r (the reference keeps its own path);
   - with ancestor sampling (Lindsten, Jordan and Schön 2014): a_t^r = i with probability

         W_{t-1}^i M_t(x_{t-1}^i, x'_t) G_t(x_{t-1}^i, x'_t) / Σ_j (same for j),

     i.e. W_{t-1}^i γ_T(x_{0:t-1}^i, x'_{t:T}) / γ_{t-1}(x_{0:t-1}^i) for the unnormalized path
     density γ of the model: the later factors of the reference do not depend on i.
   The weights are w_t^i = G_t(x_{t-1}^{a_t^i}, x_t^i) (uniform after resampling).
3. At the end a new path is drawn: k ~ W_{T-1} and x*_{0:T} is the genealogy of particle k.

The map x' -> x* is a Markov kernel that leaves the FK path distribution Q_T invariant, for
every N >= 2 (the particle-Gibbs theorem). Ancestor sampling lets the new path leave the
reference's early history even when the particle system degenerates, so the chain mixes far
better at small N; it needs `transition_log_density(t, x_prev, x) -> [N]`, log M_t(x_prev, x)
for each particle (x is a particle batch, i.e. the reference broadcast to N). For a bootstrap
model, M_t is the model's transition p(x_t | x_{t-1}) and G_t does not depend on x_{t-1}; for
a guided model M_t is the proposal q and G_t = f g / q, so M_t G_t = f g and the weights are
the usual PGAS ones either way. The densities must be with respect to a measure that does not
depend on x_prev (Lebesgue for continuous states, counting for discrete ones).

NaN potentials or transition densities count as zero weight (`num_nan` counts potentials). If
every weight of a step is zero (an impossible reference), the weights restart uniform.
Finished particles (`model.finished`) are absorbed as in `ppl.samplers.smc`: kept unchanged with
potential 1. With ancestor sampling, `transition_log_density` must then describe the absorbed
kernel for finished parents (log-mass 0 at x = x_prev, -inf elsewhere); the potential of a
finished parent is taken as 1 here.

Everything is traced (`lax.scan`, no Python control flow on values), so `conditional_smc`
can be wrapped in `jax.jit` or `jax.vmap` with `model`, `num_particles`, `num_steps`,
`transition_log_density` and `reference_index` static.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ppl import checks
from ppl.feynman_kac import FeynmanKac, Particles, check_horizon
from ppl.samplers.genealogy import trajectories
from ppl.samplers.resampling import resample
from ppl.samplers.weighting import check_num_particles, reweight, select

TransitionLogDensity = Callable[[jax.Array, Particles, Particles], jax.Array]


class ConditionalSMCState(NamedTuple):
    particles: Particles  # leaves [N, ...]; the reference sits at `reference_index`
    log_weights: jax.Array  # [N], normalized (logsumexp = 0)
    step: jax.Array  # scalar int, the time index t of `particles`


class ConditionalSMCInfo(NamedTuple):
    ancestors: jax.Array  # [N] index of each particle's parent at t - 1 (identity at t = 0)
    ess: jax.Array  # effective sample size of the step's weights
    num_nan: jax.Array  # potentials that were NaN (treated as zero weight)


class ConditionalSMCResult(NamedTuple):
    path: Particles  # the new reference path x*_{0:T}, leaves [T, ...]
    log_weights: jax.Array  # [T, N] normalized log weights per step
    ancestors: jax.Array  # [T, N] parents per step (row 0 is the identity)
    particles: Particles  # particle history, leaves [T, N, ...]
    final_index: jax.Array  # scalar int: the final particle whose genealogy is `path`
    ess: jax.Array  # [T]
    num_nan: jax.Array  # [T]


def _pin(particles: Particles, reference_t: Particles, index: int | jax.Array) -> Particles:
    """Overwrite particle `index` with the reference's value at this time."""
    return jax.tree.map(lambda x, r: x.at[index].set(r.astype(x.dtype)), particles, reference_t)


def _broadcast(reference_t: Particles, num_particles: int) -> Particles:
    return jax.tree.map(lambda r: jnp.broadcast_to(r, (num_particles, *r.shape)), reference_t)


def _weigh(log_potentials: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Normalized log weights (uniform if all are zero), ESS and NaN count, from the step's
    log potentials (the weights before them are uniform: resampling happens every step)."""
    uniform = jnp.full(log_potentials.shape, -jnp.log(log_potentials.shape[0]))
    new = reweight(uniform, log_potentials)
    return new.log_weights, new.ess, new.num_nan


def init(
    rng_key: jax.Array,
    model: FeynmanKac,
    num_particles: int,
    reference_0: Particles,
    reference_index: int = 0,
) -> tuple[ConditionalSMCState, ConditionalSMCInfo]:
    """x_0^i ~ M_0 for the free particles, x_0^r = x'_0 (`reference_0`: the reference's
    value at t = 0, leaves [...]), weighted by G_0."""
    particles = _pin(model.initial_sample(rng_key, num_particles), reference_0, reference_index)
    log_weights, ess, num_nan = _weigh(model.initial_log_potential(particles))
    state = ConditionalSMCState(particles, log_weights, jnp.zeros((), jnp.int32))
    info = ConditionalSMCInfo(jnp.arange(num_particles, dtype=jnp.int32), ess, num_nan)
    return state, info


def ancestor_log_weights(
    state: ConditionalSMCState,
    model: FeynmanKac,
    reference_t: Particles,
    transition_log_density: TransitionLogDensity,
) -> jax.Array:
    """[N] unnormalized log P(a_t^r = i) = log W_{t-1}^i + log M_t(x_{t-1}^i, x'_t)
    + log G_t(x_{t-1}^i, x'_t), for the reference's value `reference_t` = x'_t; NaN -> -inf."""
    num_particles = state.log_weights.shape[0]
    t = state.step + 1
    target = _broadcast(reference_t, num_particles)
    log_density = transition_log_density(t, state.particles, target)
    log_potential = model.log_potential(t, state.particles, target)
    if model.finished is not None:
        log_potential = jnp.where(model.finished(state.particles), 0.0, log_potential)
    logits = state.log_weights + log_density + log_potential
    return jnp.where(jnp.isnan(logits), -jnp.inf, logits)


def step(
    rng_key: jax.Array,
    state: ConditionalSMCState,
    model: FeynmanKac,
    reference_t: Particles,
    transition_log_density: TransitionLogDensity | None = None,
    reference_index: int = 0,
) -> tuple[ConditionalSMCState, ConditionalSMCInfo]:
    """One conditional resample-propose-reweight step from time t - 1 to t.

    `reference_t` is the reference's value x'_t at the new time t (leaves [...]). With
    `transition_log_density` the reference's ancestor is drawn (ancestor sampling); without,
    it is `reference_index` itself.
    """
    key_resample, key_ancestor, key_move = jax.random.split(rng_key, 3)
    num_particles = state.log_weights.shape[0]
    # Exactly N - 1 free draws: BlackJAX's multinomial returns its draws sorted, so
    # overwriting one slot of N draws would drop the smallest ancestor, not a random one.
    free = resample(key_resample, state.log_weights, num_particles - 1, "multinomial")
    if transition_log_density is None:
        reference_ancestor = jnp.asarray(reference_index, jnp.int32)
    else:
        logits = ancestor_log_weights(state, model, reference_t, transition_log_density)
        drawn = jax.random.categorical(key_ancestor, logits).astype(jnp.int32)
        # No parent can reach x'_t (an impossible reference): keep the reference's own path.
        possible = jnp.isfinite(logsumexp(logits))
        reference_ancestor = jnp.where(possible, drawn, jnp.int32(reference_index))
    ancestors = jnp.concatenate(
        [free[:reference_index], reference_ancestor[None], free[reference_index:]]
    )
    parents = jax.tree.map(lambda x: x[ancestors], state.particles)
    t = state.step + 1
    particles = model.transition_sample(key_move, t, parents)
    if model.finished is not None:
        done = model.finished(parents)
        particles = select(done, parents, particles)
    particles = _pin(particles, reference_t, reference_index)
    log_potentials = model.log_potential(t, parents, particles)
    if model.finished is not None:
        log_potentials = jnp.where(done, 0.0, log_potentials)
    log_weights, ess, num_nan = _weigh(log_potentials)
    new_state = ConditionalSMCState(particles, log_weights, t)
    return new_state, ConditionalSMCInfo(ancestors, ess, num_nan)


def _num_steps_of(path: Particles) -> int:
    leaves = jax.tree.leaves(path)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError("the reference needs leaves with a leading time axis")
    lengths = {int(jnp.shape(x)[0]) for x in leaves}
    if len(lengths) != 1:
        raise ValueError(f"the reference's leaves disagree on the number of steps: {lengths}")
    return lengths.pop()


def _check_reference(
    reference: Particles, model: FeynmanKac, rng_key: jax.Array, num_particles: int
) -> None:
    """The reference's leaves [T, ...] must match the model's particles [N, ...]; concrete
    ones must be finite."""
    particles = jax.eval_shape(lambda key: model.initial_sample(key, num_particles), rng_key)
    leaves, particle_leaves = (
        jax.tree_util.tree_leaves_with_path(reference),
        jax.tree.leaves(particles),
    )
    if len(leaves) != len(particle_leaves):
        raise ValueError(
            f"the reference has {len(leaves)} array(s), the model's particles "
            f"{len(particle_leaves)}"
        )
    for (key_path, ref), particle in zip(leaves, particle_leaves, strict=True):
        name = f"the reference{jax.tree_util.keystr(key_path)}"
        if ref.shape[1:] != particle.shape[1:]:
            raise ValueError(
                f"{name} has shape {ref.shape}, but a particle has shape "
                f"{particle.shape[1:]}: expected (T, *{particle.shape[1:]})"
            )
        checks.finite_array(name, ref)


def run(
    rng_key: jax.Array,
    model: FeynmanKac,
    reference: Particles,
    num_particles: int,
    num_steps: int,
    transition_log_density: TransitionLogDensity | None = None,
    reference_index: int = 0,
) -> ConditionalSMCResult:
    """One conditional SMC sweep over t = 0..num_steps-1 around `reference` (leaves
    [num_steps, ...]) and a new path drawn from its final weights: one particle-Gibbs update.

    Args:
        transition_log_density: `(t, x_prev, x) -> [N]` log M_t(x_prev^i, x^i) per particle;
            given, the reference's ancestors are resampled (PGAS). For a bootstrap model this
            is the model's transition density p(x_t | x_{t-1}); for a general FK model it is
            the density of the proposal M_t (the potential G_t is added here).
        reference_index: the particle slot that holds the reference (a Python int).
    """
    num_steps = checks.count("num_steps", num_steps)
    check_horizon(model, num_steps)
    num_particles = check_num_particles(num_particles, 2)  # one free particle at least
    reference_index = checks.count("reference_index", reference_index, 0)
    if reference_index >= num_particles:
        raise ValueError(f"reference_index must be in [0, {num_particles}), got {reference_index}")
    reference = jax.tree.map(jnp.asarray, reference)
    reference_steps = _num_steps_of(reference)
    if reference_steps != num_steps:
        raise ValueError(f"the reference has {reference_steps} time steps, expected {num_steps}")
    key_init, key_steps, key_pick = jax.random.split(rng_key, 3)
    _check_reference(reference, model, key_init, num_particles)
    reference_0 = jax.tree.map(lambda x: x[0], reference)
    state, info0 = init(key_init, model, num_particles, reference_0, reference_index)

    def body(
        state: ConditionalSMCState, xs: tuple[jax.Array, Particles]
    ) -> tuple[ConditionalSMCState, tuple]:
        key, reference_t = xs
        new_state, info = step(
            key, state, model, reference_t, transition_log_density, reference_index
        )
        return new_state, (info, new_state.particles, new_state.log_weights)

    keys = jax.random.split(key_steps, num_steps - 1)
    later = jax.tree.map(lambda x: x[1:], reference)
    final, (infos, history, log_weights) = jax.lax.scan(body, state, (keys, later))

    def prepend(first: jax.Array, rest: jax.Array) -> jax.Array:
        return jnp.concatenate([first[None], rest], axis=0)

    info = jax.tree.map(prepend, info0, infos)
    particles = jax.tree.map(prepend, state.particles, history)
    index = jax.random.categorical(key_pick, final.log_weights).astype(jnp.int32)
    paths = trajectories(particles, info.ancestors)
    path = jax.tree.map(lambda x: x[:, index], paths)
    return ConditionalSMCResult(
        path,
        prepend(state.log_weights, log_weights),
        info.ancestors,
        particles,
        index,
        info.ess,
        info.num_nan,
    )
