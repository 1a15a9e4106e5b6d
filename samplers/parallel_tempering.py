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
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.feynman_kac import FeynmanKac, Particles
from ppl.potentials import temper_model as temper
from ppl.progress import scan_with_progress
from ppl.samplers.conditional_smc import TransitionLogDensity, conditional_smc
from ppl.samplers.particle_gibbs import initial_path


class ParallelTemperingResult(NamedTuple):
    paths: Particles  # leaves [num_iterations, K, T, ...]: every chain's path per iteration
    swap_attempted: jax.Array  # [num_iterations, K - 1] bool
    swap_accepted: jax.Array  # [num_iterations, K - 1] bool

    def swap_rates(self) -> jax.Array:
        """[K - 1] acceptance rate of swaps between chains k and k + 1."""
        attempted = jnp.sum(self.swap_attempted, axis=0)
        return jnp.sum(self.swap_accepted, axis=0) / jnp.maximum(attempted, 1)


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


def parallel_tempering(
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
    betas = jnp.asarray(inverse_temperatures, jnp.float32)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"need at least two inverse temperatures, got shape {betas.shape}")
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    num_chains = betas.shape[0]
    key_init, key_chain = jax.random.split(rng_key)
    if initial_paths is None:
        initial_paths = jax.vmap(
            lambda key, beta: initial_path(key, temper(model, beta), num_particles, num_steps)
        )(jax.random.split(key_init, num_chains), betas)

    def sweep(key: jax.Array, beta: jax.Array, reference: Particles) -> Particles:
        tempered = temper(model, beta)
        return conditional_smc(
            key, tempered, reference, num_particles, num_steps, transition_log_density
        ).path

    chains = jnp.arange(num_chains - 1)

    def body(paths: Particles, xs: tuple[jax.Array, jax.Array]) -> tuple[Particles, tuple]:
        key, iteration = xs
        key_sweep, key_swap = jax.random.split(key)
        paths = jax.vmap(sweep)(jax.random.split(key_sweep, num_chains), betas, paths)
        log_potentials = jax.vmap(lambda p: path_log_potential(model, p))(paths)
        log_ratio = (betas[:-1] - betas[1:]) * (log_potentials[1:] - log_potentials[:-1])
        attempted = chains % 2 == iteration % 2
        uniform = jax.random.uniform(key_swap, (num_chains - 1,))
        accepted = attempted & (jnp.log(uniform) < log_ratio)
        # disjoint pairs: chain k takes k + 1's path if pair k swaps, k - 1's if pair k - 1 does
        swap = accepted.astype(jnp.int32)
        permutation = jnp.arange(num_chains) + jnp.pad(swap, (0, 1)) - jnp.pad(swap, (1, 0))
        paths = jax.tree.map(lambda x: x[permutation], paths)
        return paths, (paths, attempted, accepted)

    # the scan carry must keep one dtype: cast the start to the dtype a sweep returns
    start = jax.tree.map(jnp.asarray, initial_paths)
    chain_keys = jax.random.split(key_chain, num_chains)
    out = jax.eval_shape(lambda p: jax.vmap(sweep)(chain_keys, betas, p), start)
    start = jax.tree.map(lambda x, s: jnp.asarray(x, s.dtype), start, out)
    keys = jax.random.split(key_chain, num_iterations)
    xs = (keys, jnp.arange(num_iterations))
    if progress:
        _, outputs = scan_with_progress(body, start, xs, description="parallel tempering")
    else:
        _, outputs = jax.lax.scan(body, start, xs)
    paths, attempted, accepted = outputs
    return ParallelTemperingResult(paths, attempted, accepted)
