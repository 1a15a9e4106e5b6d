"""A NumPyro model through the toolkit's samplers, with ArviZ output and convergence checks.

    model = from_numpyro(eight_schools, rng_key=key, model_kwargs=data)
    fit = run_mcmc(key, model, kernel="nuts", num_chains=4)     # fit.inference_data, fit.report
    smc = run_tempered_smc(key, model, num_particles=2000)       # smc.log_evidence too

Both return ArviZ `InferenceData` (posterior, sample_stats, log_likelihood, observed_data).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import arviz as az
import jax
import numpy as np

from ppl.inference_data import to_inference_data
from ppl.mcmc_diagnostics import ConvergenceReport, check_convergence
from ppl.numpyro_bridge import NumPyroModel
from ppl.samplers import mcmc, tempered_smc


class MCMCFit(NamedTuple):
    """Draws as `InferenceData`, the raw sampler output and the convergence report."""

    inference_data: az.InferenceData
    samples: mcmc.MCMCSamples
    report: ConvergenceReport


class TemperedSMCFit(NamedTuple):
    """Posterior particles as one `InferenceData` chain, and the evidence estimate."""

    inference_data: az.InferenceData
    log_evidence: float
    result: tempered_smc.Result


def run_mcmc(
    rng_key: jax.Array,
    model: NumPyroModel,
    *,
    kernel: mcmc.Kernel = "nuts",
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    chain_method: mcmc.ChainMethod = "auto",
    target_acceptance_rate: float | None = None,
    num_integration_steps: int = 16,
    log_likelihood: bool = True,
    progress: bool = True,
    warn: bool = True,
) -> MCMCFit:
    """Run `num_chains` chains of NUTS, HMC or MALA (BlackJAX, window adaptation) on `model`.

    Chains start from NumPyro's `init_to_uniform` points. Convergence is checked (R-hat, bulk
    and tail ESS, divergences, energy BFMI) and a `ConvergenceWarning` is raised per failure.
    """
    init_key, sample_key = jax.random.split(rng_key)
    samples = mcmc.run(
        sample_key,
        model.logdensity_fn,
        model.initial_positions(init_key, num_chains),
        kernel=kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        chain_method=chain_method,
        target_acceptance_rate=target_acceptance_rate,
        num_integration_steps=num_integration_steps,
        progress=progress,
    )
    stats: dict[str, Any] = dict(samples.sample_stats)
    stats["step_size"] = np.broadcast_to(
        np.asarray(samples.step_size)[:, None], (num_chains, num_samples)
    )
    inference_data = to_inference_data(
        model, samples.positions, stats, log_likelihood=log_likelihood
    )
    report = check_convergence(inference_data, warn=warn, stacklevel=3)
    return MCMCFit(inference_data, samples, report)


def run_tempered_smc(
    rng_key: jax.Array,
    model: NumPyroModel,
    *,
    num_particles: int = 1000,
    target_ess: float = 0.5,
    num_mcmc_steps: int = 10,
    num_integration_steps: int = 8,
    initial_step_size: float | None = None,
    target_acceptance_rate: float = 0.65,
    waste_free: int | None = None,
    resampling: str = "systematic",
    max_iterations: int = 500,
    log_likelihood: bool = True,
    progress: bool = True,
) -> TemperedSMCFit:
    """Adaptive tempered SMC from the model's prior to its posterior, with the log evidence.

    Needs a proper prior on every latent site (it starts from prior draws).
    """
    prior_key, run_key = jax.random.split(rng_key)
    result = tempered_smc.run(
        run_key,
        model.log_prior_fn,
        model.log_likelihood_fn,
        model.sample_prior(prior_key, num_particles),
        target_ess=target_ess,
        num_mcmc_steps=num_mcmc_steps,
        num_integration_steps=num_integration_steps,
        initial_step_size=initial_step_size,
        target_acceptance_rate=target_acceptance_rate,
        waste_free=waste_free,
        resampling=resampling,
        max_iterations=max_iterations,
        progress=progress,
    )
    one_chain = jax.tree.map(lambda x: x[None], result.particles)
    inference_data = to_inference_data(model, one_chain, log_likelihood=log_likelihood)
    return TemperedSMCFit(inference_data, float(result.log_evidence), result)
