"""NUTS through the toolkit against posteriordb's reference posteriors (10 x 1000 draws from
long Stan runs): every parameter's mean and standard deviation within Monte Carlo error.

z = (ours − reference) / sqrt(MCSE_ours² + MCSE_reference²), with ArviZ's MCSE for the mean
and for the sd on both sides. With ~80 comparisons, |z| < 4.5 keeps the chance of a false alarm
under 0.1% while a real error of a few MCSEs still fails."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import arviz as az
import jax
import numpy as np
import pytest

from ppl.experiments.bayes import MCMCSettings, run_mcmc, run_tempered_smc
from ppl.models.bayes.posteriordb import (
    POSTERIOR_NAMES,
    load_posterior,
    load_reference_draws,
    stan_names,
)
from ppl.numpyro_bridge import from_numpyro

Z_LIMIT = 4.5
NEEDS_X64 = {"gp_pois_regr-gp_pois_regr"}


def mean_and_sd_errors(
    draws: dict[str, np.ndarray],
) -> dict[str, tuple[float, float, float, float]]:
    """name -> (mean, sd, mcse of mean, mcse of sd) for draws [chain, draw]."""
    data = az.from_dict(
        posterior={
            k.replace("[", "_").replace("]", "").replace(",", "_"): v for k, v in draws.items()
        }
    )
    mcse_mean = az.mcse(data, method="mean")
    mcse_sd = az.mcse(data, method="sd")
    out = {}
    for name, value in draws.items():
        key = name.replace("[", "_").replace("]", "").replace(",", "_")
        out[name] = (
            float(np.mean(value)),
            float(np.std(value)),
            float(mcse_mean[key]),
            float(mcse_sd[key]),
        )
    return out


def z_scores(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, tuple]:
    mine, theirs = mean_and_sd_errors(ours), mean_and_sd_errors(reference)
    scores = {}
    for name in reference:
        m, s, em, es = mine[name]
        rm, rs, rem, res = theirs[name]
        scores[name] = ((m - rm) / np.hypot(em, rem), (s - rs) / np.hypot(es, res))
    return scores


@pytest.mark.parametrize("name", POSTERIOR_NAMES)
def test_nuts_matches_the_reference_posterior(name):
    context = jax.enable_x64(True) if name in NEEDS_X64 else contextlib.nullcontext()
    with context:
        posterior = load_posterior(name)
        model = from_numpyro(
            posterior.model, rng_key=jax.random.key(0), model_kwargs=posterior.data
        )
        fit = run_mcmc(
            jax.random.key(1),
            model,
            MCMCSettings(num_warmup=500, num_samples=1000, target_acceptance_rate=0.9),
            num_chains=4,
            progress=False,
            log_likelihood=False,
            warn=False,
        )
    draws = {
        site: np.asarray(fit.inference_data.posterior[site]) for site in posterior.parameter_shapes
    }
    ours = stan_names(draws, batch_ndims=2)
    reference = load_reference_draws(name)
    assert set(reference) <= set(ours)
    scores = z_scores({k: ours[k] for k in reference}, reference)
    bad = {k: v for k, v in scores.items() if max(abs(v[0]), abs(v[1])) > Z_LIMIT}
    assert not bad, bad
    assert fit.report.max_rhat < 1.02


def test_tempered_smc_matches_the_eight_schools_reference():
    name = "eight_schools-eight_schools_noncentered"
    posterior = load_posterior(name)
    model = from_numpyro(posterior.model, rng_key=jax.random.key(0), model_kwargs=posterior.data)
    chains = [
        run_tempered_smc(
            jax.random.key(seed), model, num_particles=1000, progress=False, log_likelihood=False
        ).inference_data.posterior
        for seed in range(4)
    ]
    # Four independent runs as four "chains" of equally weighted particles.
    draws = {
        site: np.concatenate([np.asarray(c[site]) for c in chains])
        for site in posterior.parameter_shapes
    }
    ours = stan_names(draws, batch_ndims=2)
    reference = load_reference_draws(name)
    scores = z_scores({k: ours[k] for k in reference}, reference)
    bad = {k: v for k, v in scores.items() if max(abs(v[0]), abs(v[1])) > Z_LIMIT}
    assert not bad, bad


# Tempered SMC's evidence against bridge sampling from the reference draws. The bridge values
# are precomputed (benchmarks/posteriordb_bridge_reference.py; the command is in the file) and
# do not involve tempered SMC.
BRIDGE = json.loads((Path(__file__).parent / "posteriordb_bridge_evidence.json").read_text())
EVIDENCE_SEEDS = 8


def tempered_smc_evidence(name: str) -> tuple[float, float]:
    """Mean and standard error of log Ẑ over `EVIDENCE_SEEDS` runs at the defaults."""
    context = jax.enable_x64(True) if name in NEEDS_X64 else contextlib.nullcontext()
    with context:
        posterior = load_posterior(name)
        model = from_numpyro(
            posterior.model, rng_key=jax.random.key(0), model_kwargs=posterior.data
        )
        estimates = [
            run_tempered_smc(
                jax.random.key(seed), model, progress=False, log_likelihood=False
            ).log_evidence
            for seed in range(EVIDENCE_SEEDS)
        ]
    return float(np.mean(estimates)), float(np.std(estimates, ddof=1) / np.sqrt(EVIDENCE_SEEDS))


def assert_agrees_with_bridge(name: str) -> None:
    mean, standard_error = tempered_smc_evidence(name)
    reference = BRIDGE["posteriors"][name]
    combined = float(np.hypot(standard_error, reference["standard_error"]))
    assert abs(mean - reference["log_evidence"]) < 2 * combined, (
        mean,
        standard_error,
        reference,
    )


# In CI: eight schools; arK, whose likelihood is about 200 times narrower than its prior in
# each coordinate (from the prior, the defaults run 0.1 nats low); kidscore_momiq, whose prior
# is flat. The others (minutes each) with the slow checks.
CI_EVIDENCE = (
    "eight_schools-eight_schools_noncentered",
    "arK-arK",
    "kidiq-kidscore_momiq",
)


@pytest.mark.parametrize("name", CI_EVIDENCE)
def test_tempered_smc_evidence_agrees_with_bridge_sampling_at_the_defaults(name):
    assert_agrees_with_bridge(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in BRIDGE["posteriors"] if n not in CI_EVIDENCE])
def test_tempered_smc_evidence_agrees_with_bridge_sampling(name):
    assert_agrees_with_bridge(name)
