"""A NumPyro model as the functions the samplers need, through NumPyro's own handlers.

A NumPyro model ``model(*model_args, **model_kwargs)`` with latent sites z and observed sites y
becomes, on the unconstrained space u = T⁻¹(z) (T = `biject_to(site.support)` per site):

    logdensity_fn(u)     = log p(T(u), y) + log |det J_T(u)|      (= −NumPyro's potential energy)
    log_likelihood_fn(u) = Σ_observed log p(y_s | T(u))     (observed sites and factors, scaled)
    log_prior_fn(u)      = logdensity_fn(u) − log_likelihood_fn(u)

so that `log_prior_fn + β · log_likelihood_fn` is the tempered path from the prior (β = 0) to the
posterior (β = 1). `sample_prior` draws latent sites by running the model forward (ancestral
sampling), which is exactly the density `log_prior_fn`; `numpyro.factor` terms therefore count as
likelihood, as in NumPyro's own `log_likelihood`. `constrain` maps u back to the model's sites,
deterministic ones included. Positions are dicts of unconstrained arrays (pytrees), as BlackJAX
takes them; `ravel`/`unravel` flatten one for code that wants vectors.

Everything is delegated to `numpyro.infer.util` (`initialize_model`, `potential_energy`,
`constrain_fn`, `unconstrain_fn`, `compute_log_probs`, `log_likelihood`); nothing here
re-derives a transform.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro.infer import util as numpyro_util

Position = dict[str, jax.Array]


class NumPyroModel(NamedTuple):
    """A NumPyro model seen through its unconstrained log densities (see the module docstring).

    `model_args`/`model_kwargs` are the arguments the model was bound to (its data).
    """

    model: Callable[..., Any]
    model_args: tuple[Any, ...]
    model_kwargs: dict[str, Any]
    logdensity_fn: Callable[[Position], jax.Array]
    log_prior_fn: Callable[[Position], jax.Array]
    log_likelihood_fn: Callable[[Position], jax.Array]
    initial_position: Position
    latent_sites: tuple[str, ...]
    observed_sites: tuple[str, ...]
    deterministic_sites: tuple[str, ...]
    factor_sites: tuple[str, ...]
    improper_sites: tuple[str, ...]
    observed_values: dict[str, jax.Array]

    @property
    def dimension(self) -> int:
        """Number of unconstrained scalars."""
        return int(ravel_pytree(self.initial_position)[0].shape[0])

    def constrain(self, position: Position) -> dict[str, jax.Array]:
        """Latent and deterministic sites on the model's own supports, for one position."""
        return numpyro_util.constrain_fn(
            self.model, self.model_args, self.model_kwargs, position, return_deterministic=True
        )

    def unconstrain(self, values: Mapping[str, jax.Array]) -> Position:
        """Inverse of `constrain` on the latent sites (one draw)."""
        latent = {name: values[name] for name in self.latent_sites}
        return numpyro_util.unconstrain_fn(self.model, self.model_args, self.model_kwargs, latent)

    def pointwise_log_likelihood(self, values: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """log p(y_s | z) per observed site and data point, for one constrained draw (for LOO).

        `numpyro.factor` sites are left out: they are terms of the density, not data points.
        """
        latent = {name: values[name] for name in self.latent_sites}
        per_site = numpyro_util.log_likelihood(
            self.model, latent, *self.model_args, batch_ndims=0, **self.model_kwargs
        )
        return {name: value for name, value in per_site.items() if name not in self.factor_sites}

    def observed_data(self) -> dict[str, jax.Array]:
        """The values of the observed sites (factors excluded), as the model sees them."""
        return {
            name: value
            for name, value in self.observed_values.items()
            if name not in self.factor_sites
        }

    def initial_positions(self, rng_key: jax.Array, num_chains: int) -> Position:
        """`num_chains` starting points, stacked: NumPyro's `init_to_uniform` rule (every
        unconstrained coordinate uniform on (−2, 2)), redrawn up to 100 times per chain until
        the log density and its gradient are finite. Compiled once per model and chain count."""
        return _uniform_starts(self.logdensity_fn, self.initial_position, rng_key, num_chains)

    def sample_prior(self, rng_key: jax.Array, num_samples: int) -> Position:
        """`num_samples` unconstrained prior draws, stacked on a leading axis.

        Raises a ValueError naming the sites with no sampler (improper priors such as
        `ImproperUniform`): tempering needs a proper prior to start from.
        """
        if self.improper_sites:
            raise ValueError(
                f"latent sites {list(self.improper_sites)} have improper priors; prior draws "
                "(and so tempered SMC from the prior) need a proper prior on every latent site"
            )

        def one(key: jax.Array) -> Position:
            seeded = numpyro.handlers.seed(self.model, key)
            trace = numpyro.handlers.trace(seeded).get_trace(*self.model_args, **self.model_kwargs)
            return self.unconstrain({name: trace[name]["value"] for name in self.latent_sites})

        return jax.vmap(one)(jax.random.split(rng_key, num_samples))

    def ravel(self, position: Position) -> jax.Array:
        """One position as a flat vector (site order as in `initial_position`)."""
        return ravel_pytree(position)[0]

    def unravel(self, flat: jax.Array) -> Position:
        """Inverse of `ravel`."""
        return ravel_pytree(self.initial_position)[1](flat)


@functools.partial(jax.jit, static_argnames=("logdensity_fn", "num_chains"))
def _uniform_starts(
    logdensity_fn: Callable[[Position], jax.Array],
    template: Position,
    rng_key: jax.Array,
    num_chains: int,
) -> Position:
    flat, unravel = ravel_pytree(template)
    value_and_grad = jax.value_and_grad(lambda x: logdensity_fn(unravel(x)))

    def valid(x: jax.Array) -> jax.Array:
        value, grad = value_and_grad(x)
        return jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))

    def one(key: jax.Array) -> jax.Array:
        def draw(key: jax.Array) -> jax.Array:
            return jax.random.uniform(key, flat.shape, flat.dtype, -2.0, 2.0)

        def redraw(carry):
            key, _, tries = carry
            key, sub = jax.random.split(key)
            return key, draw(sub), tries + 1

        key, sub = jax.random.split(key)
        carry = (key, draw(sub), 1)
        _, x, _ = jax.lax.while_loop(lambda c: (c[2] < 100) & ~valid(c[1]), redraw, carry)
        return x

    return jax.vmap(lambda k: unravel(one(k)))(jax.random.split(rng_key, num_chains))


def from_numpyro(
    model: Callable[..., Any],
    *,
    rng_key: jax.Array,
    model_args: tuple[Any, ...] = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> NumPyroModel:
    """Bind a NumPyro model to its data and expose its log densities.

    `rng_key` seeds NumPyro's search for a valid initial point (`init_to_uniform`) and is the
    only randomness. The model must have at least one latent site and no discrete latent sites
    (enumeration is not supported: the samplers here are gradient based).
    """
    kwargs = dict(model_kwargs or {})
    # Trace once at NumPyro's initial values (no sampling of improper sites) to classify sites.
    seeded = numpyro.handlers.seed(model, rng_key)
    located = numpyro.handlers.substitute(seeded, substitute_fn=numpyro.infer.init_to_uniform)
    trace = numpyro.handlers.trace(located).get_trace(*model_args, **kwargs)
    latent = tuple(
        name for name, site in trace.items() if site["type"] == "sample" and not site["is_observed"]
    )
    if not latent:
        raise ValueError("the model has no latent sample sites: there is nothing to infer")
    discrete = [name for name in latent if trace[name]["fn"].is_discrete]
    if discrete:
        raise ValueError(
            f"discrete latent sites {discrete} are not supported; marginalise them out "
            "(e.g. with MixtureSameFamily) so the density is differentiable"
        )
    observed = tuple(
        name for name, site in trace.items() if site["type"] == "sample" and site["is_observed"]
    )
    deterministic = tuple(name for name, site in trace.items() if site["type"] == "deterministic")
    factors = tuple(
        name for name in observed if isinstance(trace[name]["fn"], numpyro.distributions.Unit)
    )
    improper = tuple(
        name
        for name in latent
        if isinstance(trace[name]["fn"], numpyro.distributions.ImproperUniform)
    )
    try:
        info = numpyro_util.initialize_model(
            rng_key, model, model_args=model_args, model_kwargs=kwargs
        )
    except RuntimeError as error:
        raise ValueError(f"NumPyro could not find a valid initial point: {error}") from error

    def logdensity_fn(position: Position) -> jax.Array:
        return -numpyro_util.potential_energy(model, model_args, kwargs, position)

    def log_likelihood_fn(position: Position) -> jax.Array:
        values = numpyro_util.constrain_fn(model, model_args, kwargs, position)
        per_site, _ = numpyro_util.compute_log_probs(model, model_args, kwargs, values)
        return sum((per_site[name] for name in observed), start=jnp.zeros(()))

    def log_prior_fn(position: Position) -> jax.Array:
        return logdensity_fn(position) - log_likelihood_fn(position)

    initial = {name: jnp.asarray(value) for name, value in info.param_info.z.items()}
    return NumPyroModel(
        model=model,
        model_args=tuple(model_args),
        model_kwargs=kwargs,
        logdensity_fn=logdensity_fn,
        log_prior_fn=log_prior_fn,
        log_likelihood_fn=log_likelihood_fn,
        initial_position=initial,
        latent_sites=latent,
        observed_sites=observed,
        deterministic_sites=deterministic,
        factor_sites=factors,
        improper_sites=improper,
        observed_values={name: trace[name]["value"] for name in observed},
    )
