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

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike
from numpyro.infer import init_to_uniform
from numpyro.infer import util as numpyro_util

from ppl.numpyro_starts import check_starts, diagnose_given, given_starts, search_program

Position = dict[str, jax.Array]
InitStrategy = Callable[..., Any]  # a NumPyro init strategy, e.g. init_to_median()
# Attempts of NumPyro's initialize_model (each up to 100 draws) in from_numpyro, with new keys.
MAX_INIT_ATTEMPTS = 10


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

    def initial_positions(
        self,
        rng_key: jax.Array,
        num_chains: int,
        init: InitStrategy | Mapping[str, ArrayLike] = init_to_uniform,
        *,
        max_tries: int = 100,
    ) -> Position:
        """`num_chains` unconstrained starting points, stacked on a leading axis.

        `init` is a NumPyro init strategy (`init_to_uniform`: every unconstrained coordinate
        uniform on (−2, 2); `init_to_median()`; `init_to_value(values=...)`: constrained
        values for some sites, the others uniform; ...), applied through NumPyro's
        `substitute` as NumPyro's `initialize_model` applies it, and redrawn up to `max_tries`
        times per chain until the log density and its gradient are finite. Or a dict of
        CONSTRAINED values per chain, every latent site [num_chains, *site shape], used as
        given (no retries). A ValueError says, per failing chain, what was not finite (the log
        density, or the gradient at which sites) after how many tries. Each search is compiled
        once per (log density, strategy, chain count).
        """
        if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(f"need an integer num_chains >= 1, got {num_chains!r}")
        if isinstance(init, Mapping):
            starts = given_starts(self, init, num_chains)
            return check_starts(diagnose_given(self, starts), 1)
        if not callable(init):
            raise ValueError(
                "init must be a NumPyro init strategy (init_to_uniform, init_to_median(), "
                f"init_to_value(values=...)) or a dict of values per chain, got {init!r}"
            )
        if max_tries < 1:
            raise ValueError(f"need max_tries >= 1, got {max_tries}")
        try:
            found = search_program(self, init)(rng_key, num_chains, max_tries)
        except ValueError as error:  # NumPyro's argument checks on a constant start
            name = getattr(getattr(init, "func", init), "__name__", repr(init))
            raise ValueError(
                f"no valid initial point: NumPyro rejected a start drawn by {name}: {error}"
            ) from error
        return check_starts(found, max_tries)

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


def _check_latent_sites(trace: Mapping[str, Any]) -> None:
    latent = [
        n for n, site in trace.items() if site["type"] == "sample" and not site["is_observed"]
    ]
    if not latent:
        raise ValueError("the model has no latent sample sites: there is nothing to infer")
    discrete = [name for name in latent if trace[name]["fn"].is_discrete]
    if discrete:
        raise ValueError(
            f"discrete latent sites {discrete} are not supported; marginalise them out "
            "(e.g. with MixtureSameFamily) so the density is differentiable"
        )


def from_numpyro(
    model: Callable[..., Any],
    *,
    rng_key: jax.Array,
    model_args: tuple[Any, ...] = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> NumPyroModel:
    """Bind a NumPyro model to its data and expose its log densities.

    `rng_key` seeds NumPyro's search for a valid initial point (`init_to_uniform`, up to 100
    draws; if it finds none, or a draw trips NumPyro's argument checks, it is retried with new
    keys split from `rng_key`, up to `MAX_INIT_ATTEMPTS` times) and is the only randomness.
    The model must have at least one latent site and no discrete latent sites (enumeration is
    not supported: the samplers here are gradient based).
    """
    kwargs = dict(model_kwargs or {})
    # Trace once at NumPyro's initial values (no sampling of improper sites) to classify sites,
    # then let NumPyro search for a valid point (up to 100 draws); both retried with new keys,
    # as NumPyro's MCMC retries: in float32 a uniform start can give a NaN argument (gp_pois_regr's
    # Cholesky at a large length scale), which NumPyro's argument checks reject with a ValueError.
    keys = [rng_key, *jax.random.split(rng_key, MAX_INIT_ATTEMPTS - 1)]
    errors: list[Exception] = []
    for key in keys:
        try:
            seeded = numpyro.handlers.seed(model, key)
            located = numpyro.handlers.substitute(
                seeded, substitute_fn=numpyro.infer.init_to_uniform
            )
            trace = numpyro.handlers.trace(located).get_trace(*model_args, **kwargs)
        except ValueError as error:
            errors.append(error)
            continue
        _check_latent_sites(trace)
        try:
            info = numpyro_util.initialize_model(
                key, model, model_args=model_args, model_kwargs=kwargs
            )
            break
        except (RuntimeError, ValueError) as error:
            errors.append(error)
    else:
        raise ValueError(
            f"NumPyro could not find a valid initial point in {MAX_INIT_ATTEMPTS} attempts "
            f"(keys split from rng_key, up to 100 draws each); last error: {errors[-1]}"
        ) from errors[-1]
    latent = tuple(
        name for name, site in trace.items() if site["type"] == "sample" and not site["is_observed"]
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
