"""A NumPyro model through the toolkit's samplers, with ArviZ output and convergence checks.

    model = from_numpyro(eight_schools, rng_key=key, model_kwargs=data)
    fit = run_mcmc(key, model, MCMCSettings(kernel="nuts"), num_chains=4)  # .inference_data
    fit = run_mcmc(key, model, MCMCSettings(dense_mass=True), init=init_to_median())
    smc = run_tempered_smc(key, model, num_particles=2000)       # smc.log_evidence too

The sampler settings are the samplers' own frozen dataclasses (`MCMCSettings`,
`TemperedSMCSettings`, re-exported here), passed whole; the runner's own arguments (the number
of chains or particles, output and progress) follow as keywords. Both return ArviZ
`InferenceData` (posterior, sample_stats, log_likelihood, observed_data).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import arviz as az
import jax
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike
from numpyro.infer import init_to_uniform

from ppl.inference_data import to_inference_data
from ppl.laplace import GaussianReference, LaplaceError, laplace_reference
from ppl.mcmc_diagnostics import ConvergenceReport, ConvergenceWarning, check_convergence
from ppl.numpyro_bridge import InitStrategy, NumPyroModel
from ppl.samplers import mcmc, tempered_smc
from ppl.samplers.mcmc import MCMCSettings
from ppl.samplers.programs import weak_caller
from ppl.samplers.tempered_smc import TemperedSMCSettings


class MCMCFit(NamedTuple):
    """Draws as `InferenceData`, the raw sampler output and the convergence report."""

    inference_data: az.InferenceData
    samples: mcmc.MCMCSamples
    report: ConvergenceReport


class TemperedSMCFit(NamedTuple):
    """Posterior particles as one `InferenceData` chain, and the evidence estimate."""

    inference_data: az.InferenceData
    log_evidence: float
    result: tempered_smc.TemperedSMCResult


def run_mcmc(
    rng_key: jax.Array,
    model: NumPyroModel,
    settings: MCMCSettings | None = None,
    *,
    num_chains: int = 4,
    init: InitStrategy | Mapping[str, ArrayLike] = init_to_uniform,
    dims: Mapping[str, list[str]] | None = None,
    coords: Mapping[str, Any] | None = None,
    log_likelihood: bool = True,
    progress: bool = True,
    warn: bool = True,
) -> MCMCFit:
    """Run `num_chains` chains of NUTS, HMC or MALA (BlackJAX, window adaptation) on `model`.

    `init` picks the starts (`NumPyroModel.initial_positions`): a NumPyro init strategy
    (`init_to_uniform`, the default, `init_to_median()`, `init_to_value(values=...)`) or a dict
    of constrained values per chain [num_chains, *site shape]. A chain that warm-up leaves
    degenerate is restarted (`ppl.samplers.mcmc.run`) from a fresh point of the same strategy
    (of `init_to_uniform` when `init` is a dict); the restarts per chain are in
    ``inference_data.sample_stats.attrs["reinitialized"]``. `dims`/`coords` name the axes of
    the sites for ArviZ (``dims={"theta": ["school"]}``). Convergence is checked (R-hat, bulk
    and tail ESS, divergences, energy BFMI) and a `ConvergenceWarning` is raised per failure,
    and for a chain still degenerate after its restarts. `settings` defaults to
    `MCMCSettings()`. A second run on the same model and settings reuses the compiled programs.
    """
    settings = MCMCSettings() if settings is None else settings
    init_key, sample_key = jax.random.split(rng_key)
    strategy = init_to_uniform if isinstance(init, Mapping) else init
    samples = mcmc.run(
        sample_key,
        model.logdensity_fn,
        model.initial_positions(init_key, num_chains, init),
        settings,
        new_starts=lambda key, n: model.initial_positions(key, n, strategy),
        progress=progress,
    )
    stats: dict[str, Any] = dict(samples.sample_stats)
    stats["step_size"] = np.broadcast_to(
        np.asarray(samples.step_size)[:, None], (num_chains, settings.num_samples)
    )
    inference_data = to_inference_data(
        model, samples.positions, stats, log_likelihood=log_likelihood, dims=dims, coords=coords
    )
    attrs = inference_data["sample_stats"].attrs
    attrs["reinitialized"] = np.asarray(samples.reinitialized).tolist()
    attrs["degenerate"] = np.asarray(samples.degenerate).astype(int).tolist()
    if warn and samples.degenerate.any():
        warnings.warn(
            f"chains {np.flatnonzero(samples.degenerate).tolist()} are still degenerate after "
            f"{settings.max_reinitializations} restarts (step sizes "
            f"{np.asarray(samples.step_size)[samples.degenerate].tolist()}): their draws do not "
            "move",
            ConvergenceWarning,
            stacklevel=2,
        )
    report = check_convergence(inference_data, warn=warn, stacklevel=3)
    return MCMCFit(inference_data, samples, report)


class _LaplacePath(NamedTuple):
    """q (the inflated Laplace reference), log q and log (p(y, u)/q(u)) on positions, and
    `unravel` from q's flat vectors to positions."""

    reference: GaussianReference
    log_reference: Callable
    log_ratio: Callable
    unravel: Callable


# One path per model, keyed weakly on its log density; nothing in an entry refers to the model
# (the log density is reached through a weak reference), so the entry lives as long as the
# model, and a second run reuses the mode, q and the compiled iteration.
_LAPLACE_PATHS: weakref.WeakKeyDictionary[Callable, _LaplacePath] = weakref.WeakKeyDictionary()


def _laplace_path(model: NumPyroModel) -> _LaplacePath:
    """The path from q to the posterior (`run_tempered_smc`); raises `LaplaceError` if q does
    not exist."""
    try:
        return _LAPLACE_PATHS[model.logdensity_fn]
    except (KeyError, TypeError):  # TypeError: a log density that cannot be weakly referenced
        pass
    logdensity = weak_caller(model.logdensity_fn)
    flat, unravel = ravel_pytree(model.initial_position)
    gaussian = laplace_reference(lambda u: logdensity(unravel(u)), flat)

    def log_reference(position: Any) -> jax.Array:
        return gaussian.log_density(ravel_pytree(position)[0])

    def log_ratio(position: Any) -> jax.Array:
        return logdensity(position) - log_reference(position)

    path = _LaplacePath(gaussian, log_reference, log_ratio, unravel)
    with contextlib.suppress(TypeError):
        _LAPLACE_PATHS[model.logdensity_fn] = path
    return path


def _auto_path(model: NumPyroModel) -> _LaplacePath | None:
    """q's path where q exists; else None (temper from the prior, with a warning) where every
    prior is proper."""
    try:
        return _laplace_path(model)
    except LaplaceError as error:
        if model.improper_sites:
            raise LaplaceError(
                f"no Laplace reference ({error}), and the prior of latent sites "
                f"{list(model.improper_sites)} is improper, so tempered SMC has no start"
            ) from error
        warnings.warn(
            f"no Laplace reference ({error}); tempering from the prior instead", stacklevel=3
        )
        return None


def run_tempered_smc(
    rng_key: jax.Array,
    model: NumPyroModel,
    settings: TemperedSMCSettings | None = None,
    *,
    num_particles: int = 1000,
    reference: str = "auto",
    log_likelihood: bool = True,
    progress: bool = True,
) -> TemperedSMCFit:
    """Adaptive tempered SMC to the posterior, with the log evidence log Ẑ ≈ log ∫ p(y, u) du.

    `reference` is where the path starts. "laplace": draws from q, the inflated Laplace
    approximation of the posterior (`ppl.laplace`), on the path q(u)^{1−β} p(y, u)^β; the
    incremental weights are (p(y, u)/q(u))^{Δβ}, so log Ẑ estimates ∫ p(y, u) du, with an
    improper prior's density taken as given (1 for a flat one). "prior": `num_particles`
    prior draws, the path p(u) L(u)^β (needs a proper prior on every latent site); from a
    prior much wider than the posterior the path is long, and at the default moves per
    iteration the estimate runs low (0.1 nats on arK). "auto" (the default) is "laplace"
    where q exists (a mode with a negative definite Hessian), else "prior" with a warning;
    prefer "prior" for a posterior with several separated modes, which q, centred on one,
    does not reach. A second run on the same model and settings reuses q and the compiled
    iteration. `settings` defaults to `TemperedSMCSettings()`.
    """
    settings = TemperedSMCSettings() if settings is None else settings
    if reference not in ("auto", "prior", "laplace"):
        raise ValueError(f"reference must be 'auto', 'prior' or 'laplace', got {reference!r}")
    if reference == "prior":
        path = None
    else:
        path = _laplace_path(model) if reference == "laplace" else _auto_path(model)
    start_key, run_key = jax.random.split(rng_key)
    if path is None:
        log_start, log_likelihood_fn = model.log_prior_fn, model.log_likelihood_fn
        particles = model.sample_prior(start_key, num_particles)
    else:
        log_start, log_likelihood_fn = path.log_reference, path.log_ratio
        particles = jax.vmap(path.unravel)(path.reference.sample(start_key, num_particles))
    result = tempered_smc.run(
        run_key, log_start, log_likelihood_fn, particles, settings, progress=progress
    )
    one_chain = jax.tree.map(lambda x: x[None], result.particles)
    inference_data = to_inference_data(model, one_chain, log_likelihood=log_likelihood)
    return TemperedSMCFit(inference_data, float(result.log_evidence), result)
