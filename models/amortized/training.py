"""Training an amortized posterior network on fresh simulations, with optax.

Each step draws a batch of problems (prior from the meta-prior, latent from the prior, data from
the likelihood) and minimises the expected negative log density of the true latent under the
network's posterior,

    L(θ) = E_{prior, x, y} [ −log q_θ(x | prior, y) ] + λ E_{prior, x} [ −log q_θ(x | prior, ∅) ].

The first term is the expected KL from the true posterior to the network's, plus a constant, so
the exact posterior minimises it. The second, prior reconstruction, gives the network the same
problem with every data point masked, whose exact answer is the prior itself; it is minimised by
the same exact map, so λ (`prior_weight`) changes what the network practises, not what it should
converge to. Steps run in compiled chunks behind a tqdm bar (`ppl.progress`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppl import checks
from ppl.gaussian_mixture import GaussianMixture
from ppl.progress import scan_with_progress


class TrainingResult(NamedTuple):
    """The trained network, the optimiser state (to resume) and the loss per step."""

    network: Any
    optimizer_state: Any
    losses: jax.Array


def negative_log_likelihood(
    network: Callable[[GaussianMixture, jax.Array, jax.Array], GaussianMixture],
    priors: GaussianMixture,
    latents: jax.Array,
    data: jax.Array,
    masks: jax.Array,
) -> jax.Array:
    """Mean over a batch of −log q(latent | prior, data[mask])."""

    def one(
        prior: GaussianMixture, latent: jax.Array, points: jax.Array, mask: jax.Array
    ) -> jax.Array:
        return -network(prior, points, mask).log_prob(latent)

    return jnp.mean(jax.vmap(one)(priors, latents, data, masks))


def fit(
    rng_key: jax.Array,
    network: eqx.Module,
    sample_problem: Callable[[jax.Array], Any],
    *,
    num_steps: int,
    batch_size: int = 64,
    optimizer: optax.GradientTransformation | None = None,
    optimizer_state: Any = None,
    progress: bool = True,
    chunk_size: int = 100,
    prior_weight: float = 1.0,
) -> TrainingResult:
    """Train `network` for `num_steps` steps on batches of `sample_problem(key)` (a `Problem`).

    `prior_weight` is λ of the prior-reconstruction term (module docstring; 0 drops it). Pass
    the returned `optimizer_state` (and network) back in to resume. Raises a ValueError for
    bad counts or weights, and after training if the parameters are no longer finite.
    """
    num_steps = checks.count("num_steps", num_steps)
    batch_size = checks.count("batch_size", batch_size)
    checks.number("prior_weight", prior_weight, 0)
    optimizer = optimizer or optax.adamw(1e-3)
    parameters, static = eqx.partition(network, eqx.is_inexact_array)
    if optimizer_state is None:
        optimizer_state = optimizer.init(parameters)

    def loss_fn(parameters: Any, key: jax.Array) -> jax.Array:
        problems = jax.vmap(sample_problem)(jax.random.split(key, batch_size))
        model = eqx.combine(parameters, static)
        loss = negative_log_likelihood(
            model, problems.prior, problems.latent, problems.data, problems.mask
        )
        if prior_weight:
            no_data = jnp.zeros_like(problems.mask)
            loss = loss + prior_weight * negative_log_likelihood(
                model, problems.prior, problems.latent, problems.data, no_data
            )
        return loss

    def step(carry: tuple[Any, Any], key: jax.Array) -> tuple[tuple[Any, Any], jax.Array]:
        parameters, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(parameters, key)
        updates, state = optimizer.update(grads, state, parameters)
        return (optax.apply_updates(parameters, updates), state), loss

    (parameters, optimizer_state), losses = scan_with_progress(
        step,
        (parameters, optimizer_state),
        jax.random.split(rng_key, num_steps),
        chunk_size=chunk_size,
        description="training",
        progress=progress,
    )
    _check_trained(parameters, losses)
    return TrainingResult(eqx.combine(parameters, static), optimizer_state, losses)


def _check_trained(parameters: Any, losses: jax.Array) -> None:
    """A ValueError if training left NaN or infinite parameters (a diverged run)."""
    bad = sum(int(jnp.sum(~jnp.isfinite(leaf))) for leaf in jax.tree.leaves(parameters))
    if bad:
        steps = np.flatnonzero(~np.isfinite(np.asarray(losses)))
        since = f" from step {int(steps[0])}" if steps.size else ""
        raise ValueError(
            f"training diverged: {bad} network parameter(s) are NaN or infinite after "
            f"{len(losses)} steps, the loss is not finite{since} (is the learning rate NaN or "
            "too large?)"
        )
