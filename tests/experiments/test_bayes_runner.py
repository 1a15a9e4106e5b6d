"""NumPyro models through `run_mcmc` / `run_tempered_smc`, against conjugate posteriors and
evidences computed in closed form (ppl.models.bayes.conjugate)."""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Callable

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

from ppl.experiments import bayes
from ppl.experiments.bayes import (
    MCMCSettings,
    TemperedSMCSettings,
    run_mcmc,
    run_tempered_smc,
)
from ppl.laplace import LaplaceError
from ppl.mcmc_diagnostics import ConvergenceWarning
from ppl.models.bayes.conjugate import conjugate_problems
from ppl.numpyro_bridge import from_numpyro
from tests.monte_carlo import evidence_ratio_z, mean_z

PROBLEMS = {problem.name: problem for problem in conjugate_problems(jax.random.key(2026))}


def bound(name):
    problem = PROBLEMS[name]
    return problem, from_numpyro(
        problem.model, rng_key=jax.random.key(0), model_kwargs=problem.data
    )


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_nuts_moments_match_the_exact_posterior(name):
    problem, model = bound(name)
    fit = run_mcmc(
        jax.random.key(1),
        model,
        MCMCSettings(num_warmup=300, num_samples=500),
        num_chains=2,
        progress=False,
    )
    assert fit.report.ok, fit.report.messages
    data = fit.inference_data
    mcse_mean = az.mcse(data, method="mean")
    mcse_sd = az.mcse(data, method="sd")
    for site, exact_mean in problem.posterior_mean.items():
        draws = np.asarray(data.posterior[site]).reshape(-1, *np.shape(exact_mean))
        z_mean = (draws.mean(0) - exact_mean) / np.asarray(mcse_mean[site])
        z_sd = (draws.std(0) - problem.posterior_sd[site]) / np.asarray(mcse_sd[site])
        assert np.all(np.abs(z_mean) < 4), (site, z_mean)
        assert np.all(np.abs(z_sd) < 4), (site, z_sd)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_tempered_smc_evidence_is_within_three_standard_errors(name):
    problem, model = bound(name)
    fits = [
        run_tempered_smc(
            jax.random.key(seed),
            model,
            TemperedSMCSettings(num_mcmc_steps=5),
            num_particles=2000,
            progress=False,
            log_likelihood=False,
        )
        for seed in range(16)
    ]
    log_evidences = np.array([fit.log_evidence for fit in fits])
    assert abs(mean_z(log_evidences, problem.log_evidence)) < 3, (
        log_evidences,
        problem.log_evidence,
    )
    assert abs(evidence_ratio_z(log_evidences, problem.log_evidence)) < 3
    site, exact_mean = next(iter(problem.posterior_mean.items()))
    means = np.stack([np.asarray(f.inference_data.posterior[site]).mean((0, 1)) for f in fits])
    assert np.all(np.abs(mean_z(means, exact_mean)) < 4)


def test_inference_data_supports_arviz_summary_and_loo():
    _, model = bound("linear_regression")
    fit = run_mcmc(
        jax.random.key(3),
        model,
        MCMCSettings(num_warmup=200, num_samples=200),
        num_chains=2,
        progress=False,
    )
    data = fit.inference_data
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(data.groups())
    assert data.posterior["weights"].shape == (2, 200, 3)
    assert data.log_likelihood["y"].shape == (2, 200, 50)
    assert {"diverging", "energy", "lp", "step_size", "tree_depth"} <= set(data.sample_stats)
    summary = az.summary(data)
    assert list(summary.index) == ["weights[0]", "weights[1]", "weights[2]"]
    loo = az.loo(data)
    # elpd_loo is close to the in-sample log predictive density minus p_loo (a few params).
    assert 0 < loo.p_loo < 6


def test_a_bad_run_raises_convergence_warnings():
    _, model = bound("linear_regression")
    with pytest.warns(ConvergenceWarning) as caught:
        run_mcmc(
            jax.random.key(4),
            model,
            MCMCSettings(kernel="hmc", num_warmup=5, num_samples=20, num_integration_steps=1),
            num_chains=2,
            progress=False,
        )
    messages = " ".join(str(w.message) for w in caught)
    assert "R-hat" in messages or "ESS" in messages


def test_tempered_smc_from_the_prior_refuses_an_improper_prior():
    from ppl.models.bayes.posteriordb import load_posterior

    posterior = load_posterior("kidiq-kidscore_momiq")
    model = from_numpyro(posterior.model, rng_key=jax.random.key(0), model_kwargs=posterior.data)
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"\['beta'\] have improper"):
        run_tempered_smc(
            jax.random.key(0), model, num_particles=10, reference="prior", progress=False
        )
    with pytest.raises(ValueError, match="reference must be 'auto', 'prior' or 'laplace'"):
        run_tempered_smc(jax.random.key(0), model, reference="uniform", progress=False)


# One problem in CI (about 1.5 min: the path's functions are new per run, so each run compiles);
# the others with the slow checks.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=() if name == "linear_regression" else pytest.mark.slow)
        for name in sorted(PROBLEMS)
    ],
)
def test_tempered_smc_from_a_laplace_reference_gives_the_exact_evidence(name):
    problem, model = bound(name)
    log_evidences = np.array(
        [
            run_tempered_smc(
                jax.random.key(seed),
                model,
                TemperedSMCSettings(num_mcmc_steps=20),
                reference="laplace",
                progress=False,
                log_likelihood=False,
            ).log_evidence
            for seed in range(8)
        ]
    )
    assert abs(mean_z(log_evidences, problem.log_evidence)) < 3, (
        log_evidences,
        problem.log_evidence,
    )


@pytest.mark.parametrize("reference", ["prior", "laplace"])
def test_a_second_run_on_the_same_model_traces_nothing_again(reference):
    """The runners reuse the compiled programs (and the Laplace reference): the log densities
    are traced on the first run only (counted by wrapping the functions the samplers see)."""
    _, model = bound("normal_normal")
    traces = {"logdensity": 0, "likelihood": 0}

    def counted(name, fn):
        def wrapped(position):
            traces[name] += 1
            return fn(position)

        return wrapped

    model = model._replace(
        logdensity_fn=counted("logdensity", model.logdensity_fn),
        log_likelihood_fn=counted("likelihood", model.log_likelihood_fn),
    )
    mcmc_settings = MCMCSettings(kernel="mala", num_warmup=20, num_samples=10)
    smc_settings = TemperedSMCSettings(num_mcmc_steps=1, num_integration_steps=2)
    for seed in range(2):
        key = jax.random.key(seed)
        output = dict(log_likelihood=False, progress=False)
        run_mcmc(key, model, mcmc_settings, num_chains=2, warn=False, **output)
        run_tempered_smc(key, model, smc_settings, num_particles=100, reference=reference, **output)
        if seed == 0:
            first = dict(traces)
    assert first["logdensity"] > 0 and traces == first
    assert (first["likelihood"] > 0) == (reference == "prior")


def test_the_laplace_reference_lives_as_long_as_its_model():
    _, model = bound("normal_normal")
    density = weakref.ref(model.logdensity_fn)
    settings = TemperedSMCSettings(num_mcmc_steps=1, num_integration_steps=2)
    for seed in range(2):
        run_tempered_smc(
            jax.random.key(seed), model, settings, num_particles=50, progress=False,
            log_likelihood=False,
        )  # fmt: skip
    assert model.logdensity_fn in bayes._LAPLACE_PATHS
    del model
    gc.collect()
    assert density() is None  # and with it the entry, which held it only weakly


def squared_location(prior: dist.Distribution) -> Callable[[], None]:
    """x ~ prior, 1 ~ N(x², 0.1²): modes at x = ±1 and a saddle at 0, where the Laplace
    reference's search, started there, stops."""

    def model() -> None:
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x**2, 0.1), obs=1.0)

    return model


def test_auto_tempers_from_the_prior_where_there_is_no_laplace_reference():
    model = from_numpyro(squared_location(dist.Normal(0.0, 1.0)), rng_key=jax.random.key(0))
    model = model._replace(initial_position={"x": jnp.zeros(())})
    with pytest.warns(
        UserWarning,
        match=r"no Laplace reference \(the log density's Hessian at "
        r"the mode found is not negative definite.*tempering from the prior",
    ):
        fits = [
            run_tempered_smc(jax.random.key(seed), model, progress=False, log_likelihood=False)
            for seed in range(4)
        ]
    # Both modes are found: the evidence is the quadrature's, and half the mass is at x > 0.
    grid = np.linspace(-4.0, 4.0, 400_001)
    log_joint = stats.norm.logpdf(grid) + stats.norm.logpdf(1.0, grid**2, 0.1)
    exact = np.log(np.sum(np.exp(log_joint)) * (grid[1] - grid[0]))
    estimates = np.array([fit.log_evidence for fit in fits])
    assert abs(mean_z(estimates, exact)) < 3, (estimates, exact)
    positive = np.mean([np.mean(np.asarray(f.inference_data.posterior["x"]) > 0) for f in fits])
    assert 0.35 < positive < 0.65


def test_an_improper_prior_without_a_laplace_reference_is_an_error_naming_the_site():
    flat = dist.ImproperUniform(dist.constraints.real, (), ())
    model = from_numpyro(squared_location(flat), rng_key=jax.random.key(0))
    model = model._replace(initial_position={"x": jnp.zeros(())})
    with pytest.raises(
        LaplaceError,
        match=r"not negative definite.*prior of latent sites "
        r"\['x'\] is improper, so tempered SMC has no start",
    ):
        run_tempered_smc(jax.random.key(0), model, progress=False)


def test_arma11_leaves_no_stuck_chain_over_20_seeds():
    """ARMA(1, 1): for |theta| > 1 the log density is below -1e70 at some uniform starts, and
    before the restarts 5 of 80 chains (4 of 20 seeds) ended warm-up at step sizes 1e-28..1e-11
    and never moved (NumPyro's NUTS: 1 of 80)."""
    from ppl.models.bayes.arma import arma11, simulate_arma11

    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = from_numpyro(arma11, rng_key=jax.random.key(0), model_args=(simulate_arma11(),))
        settings = MCMCSettings(num_warmup=200, num_samples=30)
        restarts = 0
        for seed in range(20):
            fit = run_mcmc(jax.random.key(seed), model, settings, progress=False, warn=False)
            step = np.asarray(fit.samples.step_size)
            theta = np.asarray(fit.inference_data.posterior["theta"])
            moving = [np.unique(chain).size > 3 for chain in theta]
            assert all(moving) and np.all(step > 1e-8 * np.median(step)), (seed, step)
            assert fit.inference_data.sample_stats.attrs["degenerate"] == [0] * 4
            restarts += sum(fit.inference_data.sample_stats.attrs["reinitialized"])
    assert restarts > 0  # the restarts did the work


def test_posteriordb_dims_and_coords_name_the_axes():
    from ppl.models.bayes.posteriordb import load_posterior

    posterior = load_posterior("eight_schools-eight_schools_noncentered")
    model = from_numpyro(posterior.model, rng_key=jax.random.key(0), model_kwargs=posterior.data)
    schools = [f"school {j}" for j in range(8)]
    fit = run_mcmc(
        jax.random.key(0),
        model,
        MCMCSettings(num_warmup=50, num_samples=20),
        num_chains=2,
        dims=posterior.dims,
        coords={"school": schools},
        progress=False,
        warn=False,
    )
    theta = fit.inference_data.posterior["theta"]
    assert theta.dims == ("chain", "draw", "school")
    assert list(theta["school"].values) == schools
    assert fit.inference_data.observed_data["y"].dims == ("school",)
    assert "school 3" in az.summary(fit.inference_data, var_names=["theta"]).index[3]


def test_run_mcmc_starts_where_told_and_names_bad_starts():
    from numpyro.infer import init_to_median

    _, model = bound("normal_normal")
    site = model.latent_sites[0]
    shape = np.shape(model.constrain(model.initial_position)[site])
    values = {site: np.full((2, *shape), 0.3)}
    settings = MCMCSettings(num_warmup=0, num_samples=4)
    fit = run_mcmc(
        jax.random.key(0),
        model,
        settings,
        num_chains=2,
        init=values,
        progress=False,
        warn=False,
        log_likelihood=False,
    )
    assert fit.inference_data.posterior[site].shape[:2] == (2, 4)
    fit = run_mcmc(
        jax.random.key(0),
        model,
        MCMCSettings(num_warmup=20, num_samples=5),
        num_chains=2,
        init=init_to_median(),
        progress=False,
        warn=False,
    )
    assert fit.inference_data.sample_stats.attrs["reinitialized"] == [0, 0]
    with pytest.raises(ValueError) as caught:
        run_mcmc(jax.random.key(0), model, settings, num_chains=3, init=values, progress=False)
    assert f"site {site!r} has shape {(2, *shape)}; expected {(3, *shape)}" in str(caught.value)
    with pytest.raises(ValueError, match="need an integer num_chains >= 1, got 0"):
        run_mcmc(jax.random.key(0), model, settings, num_chains=0, progress=False)


@pytest.mark.parametrize(
    ("dims", "coords", "message"),
    [
        ({"theta": ["a", "b"]}, None, "dims of site 'theta' are ['a', 'b'], but it has 1 axes"),
        ({"thetta": ["school"]}, None, "dims name 'thetta', which is not a site"),
        ({"theta": ["school"]}, {"school": ["x"]}, "coords of 'school' have 1 labels"),
    ],
)
def test_bad_dims_and_coords_are_named(dims, coords, message):
    from ppl.models.bayes.posteriordb import load_posterior

    posterior = load_posterior("eight_schools-eight_schools_noncentered")
    model = from_numpyro(posterior.model, rng_key=jax.random.key(0), model_kwargs=posterior.data)
    settings = MCMCSettings(kernel="mala", num_warmup=0, num_samples=4)
    with pytest.raises(ValueError) as caught:
        run_mcmc(
            jax.random.key(0),
            model,
            settings,
            num_chains=1,
            dims=dims,
            coords=coords,
            progress=False,
            warn=False,
        )
    assert message in str(caught.value)
