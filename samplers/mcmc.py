"""Gradient-based MCMC (NUTS, HMC, MALA from BlackJAX) with warm-up, over several chains.

Warm-up: NUTS and HMC use BlackJAX's `window_adaptation` (Stan's windowed adaptation of the
step size by dual averaging and of a diagonal inverse mass matrix); MALA has no mass matrix in
BlackJAX, so only its step size is adapted, by dual averaging toward acceptance 0.574.

Chains run in one of three ways (`MCMCSettings.chain_method`):
- ``"vectorized"``: `vmap` over chains. Right for fixed-length kernels (HMC, MALA), where every
  chain does the same work per step.
- ``"sequential"``: one compiled program reused chain after chain. Right for NUTS on one device:
  vmapped NUTS runs each step as long as its longest trajectory, so all chains wait for the
  slowest.
- ``"parallel"``: `shard_map` over the local devices, each device running its share of chains
  independently (num_chains must be a multiple of the device count).
``"auto"`` picks parallel when there are several devices and the chains divide among them,
else sequential for NUTS and vectorized for the others.

The settings are one frozen `MCMCSettings` (`ppl.samplers.mcmc_settings`, re-exported here:
kernel, warm-up and draw counts, target acceptance, tree depth, dense mass matrix, restarts),
passed whole to `run` and `warmup`. A chain that warm-up leaves degenerate (a step size of
~1e-25 after a start where log p < -1e70) is restarted from a fresh point and warmed up again,
a bounded number of times (`ppl.samplers.restarts`). Sampling runs
in compiled chunks behind a tqdm bar (`ppl.progress`-style); results do not depend on the chunk
size. The compiled warm-up and chunk programs are kept per (log density, settings) for as long
as the log density exists (`ppl.samplers.programs`), so a second run compiles nothing. All
randomness comes from `rng_key`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, PartitionSpec
from tqdm.auto import tqdm

from ppl.samplers.mcmc_settings import (
    CHAIN_METHODS,
    DEFAULT_TARGET_ACCEPTANCE,
    KERNELS,
    ChainMethod,
    Kernel,
    MCMCSamples,
    MCMCSettings,
)
from ppl.samplers.programs import ProgramCache
from ppl.samplers.restarts import degenerate_chains, restart_degenerate, uniform_restarts

DEFAULTS = MCMCSettings()

__all__ = [
    "CHAIN_METHODS",
    "KERNELS",
    "ChainMethod",
    "Kernel",
    "MCMCSamples",
    "MCMCSettings",
    "degenerate_chains",
    "run",
    "warmup",
]


def _algorithm(kernel: str) -> Any:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    return {"nuts": blackjax.nuts, "hmc": blackjax.hmc, "mala": blackjax.mala}[kernel]


def _make_step(
    logdensity_fn: Callable, settings: MCMCSettings
) -> Callable[[jax.Array, Any, dict], tuple[Any, dict[str, jax.Array]]]:
    """One transition with the given parameters; returns (state, scalar statistics)."""
    kernel = settings.kernel

    def step(rng_key: jax.Array, state: Any, parameters: dict) -> tuple[Any, dict]:
        if kernel == "mala":
            algorithm = blackjax.mala(logdensity_fn, parameters["step_size"])
        elif kernel == "hmc":
            algorithm = blackjax.hmc(
                logdensity_fn,
                parameters["step_size"],
                parameters["inverse_mass_matrix"],
                settings.num_integration_steps,
            )
        else:
            algorithm = blackjax.nuts(
                logdensity_fn,
                parameters["step_size"],
                parameters["inverse_mass_matrix"],
                max_num_doublings=settings.max_tree_depth,
            )
        state, info = algorithm.step(rng_key, state)
        stats = {"lp": state.logdensity, "acceptance_rate": info.acceptance_rate}
        if kernel == "mala":
            stats["accepted"] = info.is_accepted
            stats["n_steps"] = jnp.ones((), jnp.int32)
        else:
            stats["diverging"] = info.is_divergent
            stats["energy"] = info.energy
            stats["n_steps"] = jnp.asarray(info.num_integration_steps, jnp.int32)
        if kernel == "nuts":
            stats["tree_depth"] = jnp.asarray(info.num_trajectory_expansions, jnp.int32)
        return state, stats

    return step


def warmup(
    rng_key: jax.Array,
    logdensity_fn: Callable,
    position: Any,
    settings: MCMCSettings = DEFAULTS,
) -> tuple[Any, dict[str, jax.Array]]:
    """Adapt one chain from `position` for `settings.num_warmup` steps; returns its last state
    and the tuned parameters.

    Parameters: ``step_size`` and ``inverse_mass_matrix`` (a flat diagonal [d], ones for MALA;
    [d, d] with `dense_mass`). With `num_warmup=0` nothing is adapted: step size 0.1 and a unit
    mass matrix.
    Traceable, so it can be vmapped over chains.
    """
    kernel, num_steps = settings.kernel, settings.num_warmup
    target = settings.target_acceptance_rate or DEFAULT_TARGET_ACCEPTANCE[kernel]
    algorithm = _algorithm(kernel)
    dimension = ravel_pytree(position)[0].shape[0]
    mass_shape = (dimension, dimension) if settings.dense_mass else (dimension,)
    if num_steps == 0:  # no adaptation: start where told, with step size 0.1 and unit mass
        unit = jnp.eye(dimension) if settings.dense_mass else jnp.ones(dimension)
        return algorithm.init(position, logdensity_fn), {
            "step_size": jnp.asarray(0.1),
            "inverse_mass_matrix": unit,
        }
    if kernel == "mala":
        return _mala_warmup(rng_key, logdensity_fn, position, num_steps, target, dimension)
    adaptation = (
        blackjax.window_adaptation(
            algorithm,
            logdensity_fn,
            is_mass_matrix_diagonal=not settings.dense_mass,
            target_acceptance_rate=target,
            num_integration_steps=settings.num_integration_steps,
        )
        if kernel == "hmc"
        else blackjax.window_adaptation(
            algorithm,
            logdensity_fn,
            is_mass_matrix_diagonal=not settings.dense_mass,
            target_acceptance_rate=target,
            max_num_doublings=settings.max_tree_depth,
        )
    )
    (state, parameters), _ = adaptation.run(rng_key, position, num_steps=num_steps)
    return state, {
        "step_size": jnp.asarray(parameters["step_size"]),
        "inverse_mass_matrix": jnp.asarray(parameters["inverse_mass_matrix"]).reshape(mass_shape),
    }


def _mala_warmup(
    rng_key: jax.Array,
    logdensity_fn: Callable,
    position: Any,
    num_steps: int,
    target: float,
    dimension: int,
) -> tuple[Any, dict[str, jax.Array]]:
    init_averaging, update_averaging, final_averaging = dual_averaging_adaptation(target)
    initial_step_size = 0.1 / dimension ** (1 / 3)
    state = blackjax.mala.init(position, logdensity_fn)

    def body(carry, key):
        state, averaging = carry
        step_size = jnp.exp(averaging.log_step_size)
        state, info = blackjax.mala(logdensity_fn, step_size).step(key, state)
        return (state, update_averaging(averaging, info.acceptance_rate)), None

    carry = (state, init_averaging(initial_step_size))
    (state, averaging), _ = jax.lax.scan(body, carry, jax.random.split(rng_key, num_steps))
    return state, {
        "step_size": final_averaging(averaging),
        "inverse_mass_matrix": jnp.ones(dimension),
    }


def _resolve_chain_method(method: ChainMethod, kernel: str, num_chains: int) -> ChainMethod:
    devices = jax.local_device_count()
    if method == "parallel" and num_chains % devices:
        raise ValueError(
            f"chain_method='parallel' needs num_chains ({num_chains}) to be a multiple of the "
            f"{devices} local devices"
        )
    if method != "auto":
        return method
    if devices > 1 and num_chains % devices == 0:
        return "parallel"
    return "sequential" if kernel == "nuts" else "vectorized"


def _programs(functions: tuple[Callable], settings: MCMCSettings) -> tuple[Callable, Callable]:
    """Jitted (warm-up, sampling chunk) over a batch of chains, laid out by the resolved
    `settings.chain_method`."""
    (logdensity_fn,) = functions
    step = _make_step(logdensity_fn, settings)

    def warm(key, position):
        return warmup(key, logdensity_fn, position, settings)

    def chunk_one_chain(state, params, chain_keys):
        """Advance one chain through `chain_keys` [length]."""

        def body(state, key):
            state, stats = step(key, state, params)
            return state, (state.position, stats)

        return jax.lax.scan(body, state, chain_keys)

    def chunk(states, parameters, keys):
        """Advance a batch of chains through keys [chains, length]."""
        return jax.vmap(chunk_one_chain)(states, parameters, keys)

    batched_warm = jax.vmap(warm)
    if settings.chain_method == "sequential":
        # One chain per call, not vmapped: a batched NUTS while_loop carries select ops for
        # every step even with a batch of one, which costs up to ~2x on CPU.
        def first(tree):
            return jax.tree.map(lambda x: x[0], tree)

        def add_axis(tree):
            return jax.tree.map(lambda x: x[None], tree)

        def single_warm(keys, positions):
            return add_axis(warm(keys[0], first(positions)))

        def single_chunk(states, parameters, keys):
            one = chunk_one_chain(first(states), first(parameters), keys[0])
            return add_axis(one)

        return jax.jit(single_warm), jax.jit(single_chunk)
    if settings.chain_method == "parallel":
        mesh = Mesh(np.asarray(jax.local_devices()), ("chains",))
        spec = PartitionSpec("chains")
        # Each device runs its chains on its own (no collectives), so skip the replication check.
        batched_warm = jax.shard_map(
            batched_warm, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False
        )
        chunk = jax.shard_map(chunk, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return jax.jit(batched_warm), jax.jit(chunk)


# The compiled programs per (log density, settings), alive while the log density is.
_PROGRAMS = ProgramCache(_programs)


def run(
    rng_key: jax.Array,
    logdensity_fn: Callable,
    initial_positions: Any,
    settings: MCMCSettings = DEFAULTS,
    *,
    new_starts: Callable[[jax.Array, int], Any] | None = None,
    progress: bool = True,
    chunk_size: int = 250,
) -> MCMCSamples:
    """Warm up and sample `num_chains` chains, one per row of `initial_positions`.

    `initial_positions` is a pytree whose leaves have a leading chain axis. Each chain gets its
    own warm-up (its own step size and mass matrix), as in Stan and NumPyro. A chain that
    warm-up leaves degenerate (`degenerate_chains`) is restarted from a fresh point and warmed
    up again, up to `settings.max_reinitializations` times: `new_starts(key, num_chains)` gives
    the points (stacked like `initial_positions`; default: uniform on (−2, 2) per coordinate,
    with a finite log density and gradient). `MCMCSamples.reinitialized` counts the restarts
    and `.degenerate` marks chains still degenerate after them. Repeated runs on the same log
    density and settings reuse the compiled programs (`ppl.samplers.programs`).
    """
    leaves = jax.tree.leaves(initial_positions)
    if not leaves:
        raise ValueError("initial_positions is empty")
    num_chains = leaves[0].shape[0] if leaves[0].ndim else 0
    if num_chains < 1 or any(leaf.shape[:1] != (num_chains,) for leaf in leaves):
        raise ValueError(
            "every leaf of initial_positions needs the same leading chain axis, of length >= 1"
        )
    kernel, num_warmup, num_samples = settings.kernel, settings.num_warmup, settings.num_samples
    method = _resolve_chain_method(settings.chain_method, kernel, num_chains)
    # The programs run any number of draws (in chunks): one pair for every num_samples.
    warm_compiled, chunk_compiled = _PROGRAMS.get(
        (logdensity_fn,), replace(settings, num_samples=1, chain_method=method)
    )
    warmup_key, sample_key = jax.random.split(rng_key)
    restart_key = jax.random.fold_in(warmup_key, 1)  # draws without restarts are as before
    sample_keys = jax.random.split(sample_key, num_chains)

    groups = (
        [slice(c, c + 1) for c in range(num_chains)]
        if method == "sequential"
        else [slice(0, num_chains)]
    )
    take = lambda tree, rows: jax.tree.map(lambda x: x[rows], tree)  # noqa: E731
    draw_keys = jax.vmap(lambda k: jax.random.split(k, num_samples))(sample_keys)

    def warm_all(key: jax.Array, positions: Any, chains: np.ndarray, desc: str) -> Any:
        """Warm up the groups holding `chains` (a bool mask), stacked over all chains."""
        keys = jax.random.split(key, num_chains)
        out = []
        todo = [rows for rows in groups if chains[rows].any()]
        with tqdm(
            total=len(todo), desc=desc, disable=not progress or num_warmup == 0, leave=False
        ) as bar:
            for rows in groups:
                if chains[rows].any():
                    out.append(warm_compiled(keys[rows], take(positions, rows)))
                    jax.block_until_ready(out[-1])
                    bar.update(1)
                else:
                    out.append(take(warmed, rows))
        return jax.tree.map(lambda *parts: jnp.concatenate(parts), *out)

    start = time.perf_counter()
    warmed: Any = None
    warmed = warm_all(warmup_key, initial_positions, np.ones(num_chains, bool), f"{kernel} warm-up")
    if new_starts is None:
        new_starts = uniform_restarts(logdensity_fn, initial_positions)
    warmed, reinitialized, bad = restart_degenerate(
        restart_key,
        warmed,
        lambda key, positions, chains: warm_all(key, positions, chains, f"{kernel} re-warm-up"),
        new_starts,
        settings.max_reinitializations if num_warmup else 0,
        ravel_pytree(take(initial_positions, 0))[0].shape[0],
    )
    warmup_seconds = time.perf_counter() - start

    start = time.perf_counter()
    draws = []
    with tqdm(
        total=num_chains * num_samples,
        desc=f"{kernel} sampling",
        disable=not progress,
        leave=False,
    ) as bar:
        for rows in groups:
            states, parameters = take(warmed, rows)
            pieces = []
            for begin in range(0, num_samples, chunk_size):
                keys = draw_keys[rows, begin : begin + chunk_size]
                states, out = chunk_compiled(states, parameters, keys)
                pieces.append(out)
                bar.update((rows.stop - rows.start) * keys.shape[1])
            draws.append(jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=1), *pieces))
    positions, sample_stats = jax.tree.map(lambda *parts: jnp.concatenate(parts), *draws)
    jax.block_until_ready(positions)
    sampling_seconds = time.perf_counter() - start
    parameters = warmed[1]
    return MCMCSamples(
        positions=positions,
        sample_stats=sample_stats,
        step_size=parameters["step_size"],
        inverse_mass_matrix=parameters["inverse_mass_matrix"],
        warmup_seconds=warmup_seconds,
        sampling_seconds=sampling_seconds,
        reinitialized=reinitialized,
        degenerate=bad,
    )
