"""Restarts of MCMC chains that warm-up left degenerate (used by `ppl.samplers.mcmc.run`).

A chain started where the log density is astronomically low (ARMA(1, 1) with |theta| > 1:
log p < -1e70) can end Stan-style warm-up with a step size of ~1e-25 and never move.
`degenerate_chains` spots such chains after warm-up; `run` restarts them from fresh points
(`uniform_restarts` for a bare log density, the model's init strategy in `run_mcmc`) and warms
them up again, a bounded number of times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def degenerate_chains(step_size: Any, logdensity: Any, dimension: int) -> np.ndarray:
    """Chains that warm-up left unusable, [num_chains] bool: a step size that is not finite,
    below 1e-10, or below 1e-8 times the chains' median; or a log density that is not finite or
    below the chains' median by more than 1000 + 100·d (far more than a d-dimensional
    posterior's spread, about sqrt(d/2)). Such a chain does not move (issue 18: ARMA(1,1)
    chains started where log p < -1e70 ended warm-up at step size ~1e-25)."""
    step, lp = np.asarray(step_size, float), np.asarray(logdensity, float)
    bad = ~np.isfinite(step) | (step < 1e-10) | ~np.isfinite(lp)
    if (~bad).any():
        bad |= step < 1e-8 * np.median(step[~bad])
        bad |= lp < np.median(lp[~bad]) - (1000.0 + 100.0 * dimension)
    return bad


def uniform_restarts(logdensity_fn: Callable, template: Any) -> Callable[[jax.Array, int], Any]:
    """Fresh starts for chains of a bare log density: every unconstrained coordinate uniform on
    (−2, 2) (NumPyro's `init_to_uniform`), redrawn up to 100 times until the log density and
    its gradient are finite."""
    flat, unravel = ravel_pytree(jax.tree.map(lambda x: x[0], template))
    value_and_grad = jax.value_and_grad(lambda x: logdensity_fn(unravel(x)))

    def invalid(x: jax.Array) -> jax.Array:
        value, grad = value_and_grad(x)
        return ~(jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)))

    def one(key: jax.Array) -> Any:
        def draw(carry):
            key, _, tries = carry
            key, sub = jax.random.split(key)
            return key, jax.random.uniform(sub, flat.shape, flat.dtype, -2.0, 2.0), tries + 1

        carry = draw((key, flat, 0))
        _, x, _ = jax.lax.while_loop(lambda c: (c[2] < 100) & invalid(c[1]), draw, carry)
        return unravel(x)

    return jax.jit(lambda key, n: jax.vmap(one)(jax.random.split(key, n)), static_argnums=1)


def replace_rows(mask: jax.Array, new: Any, old: Any) -> Any:
    """`new` where `mask` [num_chains] holds, else `old` (pytrees with a leading chain axis)."""
    return jax.tree.map(
        lambda a, b: jnp.where(mask.reshape(-1, *[1] * (b.ndim - 1)), a, b), new, old
    )


def restart_degenerate(
    rng_key: jax.Array,
    warmed: Any,
    warm: Callable[[jax.Array, Any, np.ndarray], Any],
    new_starts: Callable[[jax.Array, int], Any],
    max_restarts: int,
    dimension: int,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Restart the degenerate chains of `warmed` (states, parameters) up to `max_restarts`
    times: fresh starts from `new_starts(key, num_chains)`, warmed up again by
    `warm(key, positions, chains)` (`chains` a bool mask; it returns every chain, stacked).
    Returns the new (states, parameters), the restarts per chain and the chains still
    degenerate."""
    num_chains = np.shape(warmed[1]["step_size"])[0]
    restarts = np.zeros(num_chains, np.int32)
    bad = degenerate_chains(warmed[1]["step_size"], warmed[0].logdensity, dimension)
    for _ in range(max_restarts):
        if not bad.any():
            break
        rng_key, starts_key, key = jax.random.split(rng_key, 3)
        redone = warm(key, new_starts(starts_key, num_chains), bad)
        warmed = replace_rows(jnp.asarray(bad), redone, warmed)
        restarts += bad
        bad = degenerate_chains(warmed[1]["step_size"], warmed[0].logdensity, dimension)
    return warmed, restarts, bad
