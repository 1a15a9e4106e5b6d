"""Stochastic variational inference baselines through NumPyro, compiled and batched.

`run_svi` runs NumPyro's `SVI` for a fixed number of steps inside one `lax.scan`, so it can be
`jax.vmap`-ed over many problems (NumPyro's own `SVI.run` keeps a Python loop for its progress
bar). The model and guide are ordinary NumPyro programs; the problem's arguments are passed
positionally to both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.optim import optax_to_numpyro


class SVIResult(NamedTuple):
    """The guide's parameters after the last step and the ELBO loss per step."""

    params: dict[str, Any]
    losses: jax.Array


def run_svi(
    rng_key: jax.Array,
    model: Callable[..., Any],
    guide: Callable[..., Any],
    model_args: tuple[Any, ...],
    *,
    num_steps: int,
    learning_rate: float = 0.05,
    num_particles: int = 1,
) -> SVIResult:
    """`num_steps` Adam steps on the negative ELBO (`num_particles` draws per estimate)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    svi = SVI(
        model,
        guide,
        optax_to_numpyro(optax.adam(learning_rate)),
        Trace_ELBO(num_particles=num_particles),
    )
    state = svi.init(rng_key, *model_args)

    def step(state: Any, _: None) -> tuple[Any, jax.Array]:
        state, loss = svi.update(state, *model_args)
        return state, loss

    state, losses = jax.lax.scan(step, state, None, length=num_steps)
    return SVIResult(svi.get_params(state), losses)
