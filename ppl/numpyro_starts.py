"""The search for valid MCMC starts of a `NumPyroModel` (`NumPyroModel.initial_positions`).

A start is drawn by a NumPyro init strategy (`init_to_uniform`, `init_to_median()`,
`init_to_value(values=...)`), applied through NumPyro's `substitute` as `initialize_model`
applies it, and redrawn in a compiled `while_loop` until the log density and its gradient are
finite, or given as constrained values per chain; either way, a start that is not valid is a
ValueError saying per chain what was not finite.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.typing import ArrayLike
from numpyro.infer import util as numpyro_util

if TYPE_CHECKING:
    from ppl.numpyro_bridge import NumPyroModel

Position = dict[str, jax.Array]

# The compiled start searches per log density (one per init strategy, and "given" for the
# check of starts given as values). A search holds the log density only by a weak reference
# (and the model function and data), so an entry goes when its log density goes.
_SEARCHES: weakref.WeakKeyDictionary[Callable, dict[Any, Callable]] = weakref.WeakKeyDictionary()


def _diagnose(density: weakref.ref[Callable]) -> Callable[[Position], tuple[jax.Array, dict]]:
    """position -> (log density, {site: is its gradient finite}); traced while it lives."""

    def diagnose(position: Position) -> tuple[jax.Array, dict[str, jax.Array]]:
        logdensity_fn = density()
        assert logdensity_fn is not None, "the log density is gone"
        value, grad = jax.value_and_grad(logdensity_fn)(position)
        return value, {name: jnp.all(jnp.isfinite(g)) for name, g in grad.items()}

    return diagnose


def _is_valid(value: jax.Array, grad_finite: dict[str, jax.Array]) -> jax.Array:
    return functools.reduce(jnp.logical_and, grad_finite.values(), jnp.isfinite(value))


def search_program(model: NumPyroModel, strategy: Any) -> Callable:
    """Jitted (key, num_chains, max_tries) -> (starts, log densities, gradient finiteness)."""
    programs = _SEARCHES.setdefault(model.logdensity_fn, {})
    if strategy in programs:
        return programs[strategy]
    diagnose = _diagnose(weakref.ref(model.logdensity_fn))
    function, args, kwargs, latent = (
        model.model,
        model.model_args,
        model.model_kwargs,
        model.latent_sites,
    )

    def propose(key: jax.Array) -> Position:
        seeded = numpyro.handlers.seed(function, key)
        located = numpyro.handlers.substitute(seeded, substitute_fn=strategy)
        trace = numpyro.handlers.trace(located).get_trace(*args, **kwargs)
        values = {name: trace[name]["value"] for name in latent}
        return numpyro_util.unconstrain_fn(function, args, kwargs, values)

    def one(key: jax.Array, max_tries: jax.Array) -> tuple[Position, jax.Array, dict]:
        def redraw(carry):
            key, _, _, tries = carry
            key, sub = jax.random.split(key)
            position = propose(sub)
            return (key, position, diagnose(position), tries + 1)

        key, sub = jax.random.split(key)
        position = propose(sub)
        carry = (key, position, diagnose(position), 1)
        _, position, (value, grad_finite), _ = jax.lax.while_loop(
            lambda c: (c[3] < max_tries) & ~_is_valid(*c[2]), redraw, carry
        )
        return position, value, grad_finite

    def program(rng_key: jax.Array, num_chains: int, max_tries: int) -> Any:
        keys = jax.random.split(rng_key, num_chains)
        return jax.vmap(lambda k: one(k, jnp.asarray(max_tries)))(keys)

    programs[strategy] = jax.jit(program, static_argnums=1)
    return programs[strategy]


def given_starts(model: NumPyroModel, values: Mapping[str, ArrayLike], num_chains: int) -> Position:
    """Constrained values per chain -> unconstrained starts, with the shapes and supports
    checked (a value outside its site's support unconstrains to a non-finite number)."""
    missing = [name for name in model.latent_sites if name not in values]
    unknown = [name for name in values if name not in model.latent_sites]
    if missing or unknown:
        raise ValueError(
            f"initial values need exactly the latent sites {list(model.latent_sites)}; "
            f"missing {missing}, unknown {unknown}"
        )
    shapes = jax.eval_shape(model.constrain, model.initial_position)
    arrays = {}
    for name in model.latent_sites:
        array = jnp.asarray(values[name], dtype=shapes[name].dtype)
        expected = (num_chains, *shapes[name].shape)
        if array.shape != expected:
            raise ValueError(
                f"initial value of site {name!r} has shape {array.shape}; expected {expected} "
                "(num_chains, then the site's shape)"
            )
        if not bool(jnp.all(jnp.isfinite(array))):
            raise ValueError(f"initial value of site {name!r} is not finite")
        arrays[name] = array
    starts = jax.vmap(model.unconstrain)(arrays)
    for name, array in starts.items():
        bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(array).reshape(num_chains, -1)), 1))
        if bad.size:
            raise ValueError(
                f"initial value of site {name!r} is outside its support for chain(s) {bad.tolist()}"
            )
    return starts


def check_starts(found: Any, tries: int) -> Position:
    """The starts, or a ValueError naming per chain what was not finite after `tries` tries."""
    starts, value, grad_finite = found
    problems = []
    for chain in range(np.shape(value)[0]):
        sites = [name for name, ok in grad_finite.items() if not bool(ok[chain])]
        outside = [
            name for name, x in starts.items() if not np.all(np.isfinite(np.asarray(x[chain])))
        ]
        if outside:  # init_to_value(values=...) with a value off the site's support
            problems.append(f"chain {chain}: sites {outside} are outside their supports")
        elif not np.isfinite(value[chain]):
            problems.append(f"chain {chain}: the log density is {float(value[chain])}")
        elif sites:
            problems.append(f"chain {chain}: the gradient is not finite at sites {sites}")
    if problems:
        raise ValueError(
            f"no valid initial point after {tries} {'try' if tries == 1 else 'tries'} per "
            "chain (needs a finite log density and gradient); " + "; ".join(problems)
        )
    return starts


def diagnose_given(model: NumPyroModel, starts: Position) -> Any:
    programs = _SEARCHES.setdefault(model.logdensity_fn, {})
    if "given" not in programs:
        programs["given"] = jax.jit(jax.vmap(_diagnose(weakref.ref(model.logdensity_fn))))
    return (starts, *programs["given"](starts))
