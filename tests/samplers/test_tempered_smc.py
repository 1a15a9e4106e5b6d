"""Adaptive tempered SMC against a conjugate Gaussian: exact evidence and posterior."""

from __future__ import annotations

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ppl.samplers import tempered_smc
from ppl.samplers.tempered_smc import TemperedSMCSettings
from tests.compilations import counting_compilations
from tests.monte_carlo import evidence_ratio_z, mean_z

# Prior x ~ N(0, I_3); data y_k ~ N(x, 0.5² I) for 4 observations of the 3-vector.
NOISE = 0.5
DATA = np.array([[1.0, -0.5, 2.0], [1.4, -0.1, 1.7], [0.8, -0.9, 2.2], [1.1, -0.4, 1.9]])
POSTERIOR_PRECISION = 1.0 + DATA.shape[0] / NOISE**2
POSTERIOR_MEAN = DATA.sum(0) / NOISE**2 / POSTERIOR_PRECISION
LOG_EVIDENCE = sum(
    stats.multivariate_normal.logpdf(
        DATA[:, d], np.zeros(4), NOISE**2 * np.eye(4) + np.ones((4, 4))
    )
    for d in range(3)
)


def log_prior_fn(position):
    return jnp.sum(jax.scipy.stats.norm.logpdf(position["x"]))


def log_likelihood_fn(position):
    return jnp.sum(jax.scipy.stats.norm.logpdf(jnp.asarray(DATA), position["x"], NOISE))


def prior_draws(key, num):
    return {"x": jax.random.normal(key, (num, 3))}


def runs(num_runs, settings):
    results = []
    for seed in range(num_runs):
        prior_key, key = jax.random.split(jax.random.key(seed))
        results.append(
            tempered_smc.run(
                key,
                log_prior_fn,
                log_likelihood_fn,
                prior_draws(prior_key, 400),
                settings,
                progress=False,
            )
        )
    return results


@pytest.mark.parametrize("waste_free", [None, 8])
def test_evidence_is_unbiased_and_particles_follow_the_posterior(waste_free):
    results = runs(12, TemperedSMCSettings(waste_free=waste_free, num_mcmc_steps=5))
    log_evidences = np.array([float(r.log_evidence) for r in results])
    assert abs(evidence_ratio_z(log_evidences, LOG_EVIDENCE)) < 3, (log_evidences, LOG_EVIDENCE)
    assert abs(mean_z(log_evidences, LOG_EVIDENCE)) < 3
    means = np.stack([np.asarray(r.particles["x"]).mean(0) for r in results])
    variances = np.stack([np.asarray(r.particles["x"]).var(0) for r in results])
    assert np.all(np.abs(mean_z(means, POSTERIOR_MEAN)) < 4)
    assert np.all(np.abs(mean_z(variances, 1 / POSTERIOR_PRECISION)) < 4)
    record = results[0]
    assert record.temperatures[-1] == 1.0 and np.all(np.diff(record.temperatures) >= 0)
    assert len(record.temperatures) == len(record.acceptance_rates) >= 3


def test_a_wrong_likelihood_shifts_the_evidence_by_its_constant():
    shifted = runs(1, TemperedSMCSettings(num_mcmc_steps=2, target_ess=0.5))[0]
    results = []
    for seed in range(1):
        prior_key, key = jax.random.split(jax.random.key(seed))
        results.append(
            tempered_smc.run(
                key,
                log_prior_fn,
                lambda p: log_likelihood_fn(p) + 3.0,
                prior_draws(prior_key, 400),
                TemperedSMCSettings(num_mcmc_steps=2, target_ess=0.5),
                progress=False,
            )
        )
    assert float(results[0].log_evidence) == pytest.approx(float(shifted.log_evidence) + 3.0)


def test_a_stalled_schedule_stops_with_a_clear_message():
    with pytest.raises(tempered_smc.TemperingStalledError, match="stalled") as caught:
        tempered_smc.run(
            jax.random.key(0),
            log_prior_fn,
            log_likelihood_fn,
            prior_draws(jax.random.key(1), 100),
            TemperedSMCSettings(max_iterations=1),
            progress=False,
        )
    assert 0.0 < float(caught.value.state.smc.tempering_param) < 1.0


def test_bad_settings_are_named():
    particles = prior_draws(jax.random.key(1), 30)
    with pytest.raises(ValueError, match="target_ess"):
        tempered_smc.run(
            jax.random.key(0),
            log_prior_fn,
            log_likelihood_fn,
            particles,
            TemperedSMCSettings(target_ess=1.5),
        )
    with pytest.raises(ValueError, match="waste_free"):
        tempered_smc.run(
            jax.random.key(0),
            log_prior_fn,
            log_likelihood_fn,
            particles,
            TemperedSMCSettings(waste_free=7),
        )
    with pytest.raises(ValueError, match="resampling"):
        tempered_smc.run(
            jax.random.key(0),
            log_prior_fn,
            log_likelihood_fn,
            particles,
            TemperedSMCSettings(resampling="magic"),
        )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_mcmc_steps": 0}, "num_mcmc_steps must be an integer >= 1, got 0"),
        ({"num_mcmc_steps": -1}, "num_mcmc_steps must be an integer >= 1, got -1"),
        ({"num_mcmc_steps": 2.5}, "num_mcmc_steps must be an integer >= 1, got 2.5"),
        ({"num_integration_steps": 0}, "num_integration_steps must be an integer >= 1, got 0"),
        ({"max_iterations": 0}, "max_iterations must be an integer >= 1, got 0"),
        ({"initial_step_size": 0.0}, "initial_step_size must be a finite number > 0 or None"),
        ({"initial_step_size": -1.0}, "initial_step_size must be a finite number > 0 or None"),
        ({"initial_step_size": float("nan")}, "initial_step_size must be a finite number > 0"),
        ({"target_acceptance_rate": 1.5}, "target_acceptance_rate must be in (0, 1), got 1.5"),
        ({"target_acceptance_rate": float("nan")}, "target_acceptance_rate must be in (0, 1)"),
        ({"target_ess": float("nan")}, "target_ess must be in (0, 1), got nan"),
        ({"waste_free": 2.5}, "waste_free=2.5 must be an integer >= 2 dividing N"),
        ({"dense_mass_matrix": "yes"}, "dense_mass_matrix must be True, False or None"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(settings, message):
    with pytest.raises(ValueError) as caught:
        TemperedSMCSettings(**settings)
    assert message in str(caught.value)


def test_a_second_run_compiles_nothing_and_the_step_goes_with_its_functions():
    def make_likelihood():
        data = jnp.asarray(DATA)
        return lambda position: jnp.sum(jax.scipy.stats.norm.logpdf(data, position["x"], NOISE))

    likelihood = make_likelihood()
    settings = TemperedSMCSettings(num_mcmc_steps=2)

    def run(seed, likelihood, settings):
        return tempered_smc.run(
            jax.random.key(seed),
            log_prior_fn,
            likelihood,
            prior_draws(jax.random.key(seed + 1), 100),
            settings,
            progress=False,
        )

    run(0, likelihood, settings)
    with counting_compilations() as compiled:
        run(1, likelihood, settings)
        loop = TemperedSMCSettings(num_mcmc_steps=2, max_iterations=400, initial_step_size=0.3)
        run(2, likelihood, loop)
    assert compiled == [], "a warm run recompiled"
    likelihood_ref = weakref.ref(likelihood)
    del likelihood
    gc.collect()
    assert likelihood_ref() is None, "the compiled step kept the log likelihood alive"
