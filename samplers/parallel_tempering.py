"""Particle Gibbs with parallel tempering (the variant Puri et al. 2025 use for LLM inference
scaling).

K chains run at inverse temperatures beta_0 > beta_1 > ... > beta_{K-1} >= 0 (beta_0 = 1 is the
target). Chain k targets the Feynman-Kac path distribution with tempered potentials

    pi_k(x_{0:T}) ∝ M_0(x_0) G_0(x_0)^beta_k Π_t M_t(x_{t-1}, x_t) G_t(x_{t-1}, x_t)^beta_k,

so hot chains (small beta) see a flatter landscape and move between modes more easily. Each
iteration updates every chain with one conditional-SMC sweep on its tempered model, then
proposes to swap the paths of neighbouring chains (k, k+1) -- pairs with k even on even
iterations and k odd on odd ones -- and accepts with probability

    min(1, exp((beta_k - beta_{k+1}) (L(x^{(k+1)}) - L(x^{(k)})))),
    L(x) = log G_0(x_0) + Σ_{t>=1} log G_t(x_{t-1}, x_t),

the Metropolis ratio pi_k(x') pi_{k+1}(x) / (pi_k(x) pi_{k+1}(x')), in which the proposal
densities M cancel. Both moves leave the product of the pi_k invariant, so chain 0 samples
the target.

`init` draws the chains' starting paths, `step` is one iteration (sweeps, then swaps), `run`
scans `step` over `num_iterations`; `ppl.samplers.host_parallel_tempering` is the same
algorithm for host-stepped models and shares `swap_decisions`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.feynman_kac import FeynmanKac, Particles
from ppl.potentials import temper_model as temper
from ppl.progress import scan_with_progress
from ppl.samplers import conditional_smc
from ppl.samplers.conditional_smc import TransitionLogDensity
from ppl.samplers.particle_gibbs import initial_path


class ParallelTemperingState(NamedTuple):
    paths: Particles  # leaves [K, T, ...]: every chain's current path
    iteration: jax.Array  # scalar int: iterations done (its parity picks the swap pairs)


class ParallelTemperingInfo(NamedTuple):
    swap_attempted: jax.Array  # [K - 1] bool
    swap_accepted: jax.Array  # [K - 1] bool


class ParallelTemperingResult(NamedTuple):
    state: ParallelTemperingState  # after the last iteration
    info: ParallelTemperingInfo  # per iteration, leaves [num_iterations, K - 1]
    paths: Particles  # leaves [num_iterations, K, T, ...]: every chain's path per iteration

    @property
    def swap_attempted(self) -> jax.Array:
        return self.info.swap_attempted

    @property
    def swap_accepted(self) -> jax.Array:
        return self.info.swap_accepted

    def swap_rates(self) -> jax.Array:
        """[K - 1] acceptance rate of swaps between chains k and k + 1."""
        attempted = jnp.sum(self.swap_attempted, axis=0)
        return jnp.sum(self.swap_accepted, axis=0) / jnp.maximum(attempted, 1)


def swap_decisions(
    log_uniforms: jax.Array | np.ndarray,
    inverse_temperatures: jax.Array | np.ndarray,
    log_potentials: jax.Array | np.ndarray,
    parity: jax.Array | int,
) -> tuple[jax.Array, jax.Array]:
    """Which neighbour swaps (k, k+1) are attempted (k % 2 == parity) and accepted
    (log u_k < (beta_k - beta_{k+1}) (L_{k+1} - L_k); NaN never accepts), over the last
    axis of `inverse_temperatures` and `log_potentials` [..., K]; `log_uniforms` [..., K - 1].
    Works on traced JAX arrays (jitted chains) and on NumPy arrays (host ladders)."""
    betas, values = inverse_temperatures, log_potentials
    log_ratio = (betas[..., :-1] - betas[..., 1:]) * (values[..., 1:] - values[..., :-1])
    pairs = np.arange(log_ratio.shape[-1])
    attempted = pairs % 2 == parity
    if not isinstance(log_ratio, np.ndarray):
        attempted = jnp.broadcast_to(attempted, log_ratio.shape)
    else:
        attempted = np.broadcast_to(attempted, log_ratio.shape).copy()
    return attempted, attempted & (log_uniforms < log_ratio)


def path_log_potential(model: FeynmanKac, path: Particles) -> jax.Array:
    """L(x) = log G_0(x_0) + Σ_t log G_t(x_{t-1}, x_t) of one path (leaves [T, ...])."""
    as_batch = jax.tree.map(lambda x: x[:, None], path)  # [T, 1, ...]: a particle axis of 1
    first = jax.tree.map(lambda x: x[0], as_batch)
    initial = model.initial_log_potential(first)[0]
    num_steps = jax.tree.leaves(path)[0].shape[0]

    def at(t: jax.Array) -> jax.Array:
        previous = jax.tree.map(lambda x: x[t - 1], as_batch)
        current = jax.tree.map(lambda x: x[t], as_batch)
        return model.log_potential(t, previous, current)[0]

    return initial + jnp.sum(jax.vmap(at)(jnp.arange(1, num_steps)))


def _sweep(
    key: jax.Array,
    model: FeynmanKac,
    beta: jax.Array,
    reference: Particles,
    num_particles: int,
    num_steps: int,
    transition_log_density: TransitionLogDensity | None,
) -> Particles:
    """One conditional-SMC sweep of the chain at inverse temperature `beta`: its new path."""
    tempered = temper(model, beta)
    return conditional_smc.run(
        key, tempered, reference, num_particles, num_steps, transition_log_density
    ).path


def init(
    rng_key: jax.Array,
    model: FeynmanKac,
    inverse_temperatures: jax.Array,
    num_particles: int,
    num_steps: int,
    initial_paths: Particles | None = None,
    transition_log_density: TransitionLogDensity | None = None,
) -> ParallelTemperingState:
    """The chains' starting paths: `initial_paths` (leaves [K, T, ...]) or, if None, one path
    per chain from a plain SMC run on its tempered model (key k of `split(rng_key, K)`), cast
    to the dtypes a sweep returns."""
    betas = _check_temperatures(inverse_temperatures)
    num_chains = betas.shape[0]
    if initial_paths is None:
        initial_paths = jax.vmap(
            lambda key, beta: initial_path(key, temper(model, beta), num_particles, num_steps)
        )(jax.random.split(rng_key, num_chains), betas)
    # the scan carry must keep one dtype: cast the start to the dtype a sweep returns
    start = jax.tree.map(jnp.asarray, initial_paths)
    keys = jax.random.split(rng_key, num_chains)

    def sweeps(paths: Particles) -> Particles:
        return jax.vmap(
            lambda k, b, p: _sweep(k, model, b, p, num_particles, num_steps, transition_log_density)
        )(keys, betas, paths)

    out = jax.eval_shape(sweeps, start)
    start = jax.tree.map(lambda x, s: jnp.asarray(x, s.dtype), start, out)
    return ParallelTemperingState(start, jnp.zeros((), jnp.int32))


def step(
    rng_key: jax.Array,
    state: ParallelTemperingState,
    model: FeynmanKac,
    inverse_temperatures: jax.Array,
    num_particles: int,
    num_steps: int,
    transition_log_density: TransitionLogDensity | None = None,
) -> tuple[ParallelTemperingState, ParallelTemperingInfo]:
    """One iteration: a conditional-SMC sweep on every chain, then swaps of neighbours
    (k, k+1) with k % 2 == iteration % 2 (disjoint pairs, applied as one permutation)."""
    betas = jnp.asarray(inverse_temperatures, jnp.float32)
    num_chains = betas.shape[0]
    key_sweep, key_swap = jax.random.split(rng_key)
    paths = jax.vmap(
        lambda k, b, p: _sweep(k, model, b, p, num_particles, num_steps, transition_log_density)
    )(jax.random.split(key_sweep, num_chains), betas, state.paths)
    log_potentials = jax.vmap(lambda p: path_log_potential(model, p))(paths)
    uniform = jax.random.uniform(key_swap, (num_chains - 1,))
    attempted, accepted = swap_decisions(
        jnp.log(uniform), betas, log_potentials, state.iteration % 2
    )
    # disjoint pairs: chain k takes k + 1's path if pair k swaps, k - 1's if pair k - 1 does
    swap = accepted.astype(jnp.int32)
    permutation = jnp.arange(num_chains) + jnp.pad(swap, (0, 1)) - jnp.pad(swap, (1, 0))
    paths = jax.tree.map(lambda x: x[permutation], paths)
    new_state = ParallelTemperingState(paths, state.iteration + 1)
    return new_state, ParallelTemperingInfo(attempted, accepted)


def _check_temperatures(inverse_temperatures: jax.Array) -> jax.Array:
    betas = jnp.asarray(inverse_temperatures, jnp.float32)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"need at least two inverse temperatures, got shape {betas.shape}")
    return betas


def run(
    rng_key: jax.Array,
    model: FeynmanKac,
    inverse_temperatures: jax.Array,
    num_particles: int,
    num_steps: int,
    num_iterations: int,
    transition_log_density: TransitionLogDensity | None = None,
    initial_paths: Particles | None = None,
    progress: bool = False,
) -> ParallelTemperingResult:
    """Run `num_iterations` of particle Gibbs with swaps between tempered chains.

    Args:
        inverse_temperatures: [K] decreasing, the first is 1 (the target chain).
        transition_log_density: passed to every conditional-SMC sweep (ancestor sampling).
        initial_paths: leaves [K, T, ...]; None starts each chain from a plain SMC run on its
            tempered model.
        progress: run from the host in compiled chunks with a progress bar (same draws; the
            call is then not traceable by `jax.jit`).
    """
    betas = _check_temperatures(inverse_temperatures)
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    key_init, key_chain = jax.random.split(rng_key)
    state = init(
        key_init, model, betas, num_particles, num_steps, initial_paths, transition_log_density
    )

    def body(state: ParallelTemperingState, key: jax.Array) -> tuple[ParallelTemperingState, tuple]:
        new_state, info = step(
            key, state, model, betas, num_particles, num_steps, transition_log_density
        )
        return new_state, (new_state.paths, info)

    keys = jax.random.split(key_chain, num_iterations)
    if progress:
        final, (paths, info) = scan_with_progress(
            body, state, keys, description="parallel tempering"
        )
    else:
        final, (paths, info) = jax.lax.scan(body, state, keys)
    return ParallelTemperingResult(final, info, paths)
