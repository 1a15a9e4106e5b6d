"""posteriordb posteriors: every model initialises with a finite potential energy, its sites cover
the reference parameters with their shapes, stan_names flattens as Stan does, and at reference
draws each model's log density moves between draws exactly as a hand-written scipy density of
posteriordb's Stan model does (differences between draws, so normalising constants cancel)."""

from __future__ import annotations

import contextlib
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import log_density, potential_energy, unconstrain_fn
from scipy import linalg, special, stats

from ppl.models.bayes.posteriordb import (
    POSTERIOR_NAMES,
    load_posterior,
    load_reference_draws,
    stan_names,
)

GP = "gp_pois_regr-gp_pois_regr"
DRAWS = [(0, 0), (1, 111), (3, 500), (6, 250), (9, 999)]  # (chain, draw) of the reference


@functools.cache
def reference(name: str) -> dict[str, np.ndarray]:
    return load_reference_draws(name)


def precision(name: str) -> contextlib.AbstractContextManager:
    """gp_pois_regr needs 64-bit floats (its float32 Cholesky is NaN for much of the posterior)."""
    return jax.enable_x64(True) if name == GP else contextlib.nullcontext()


def unflatten(
    draws: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], index: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """The inverse of stan_names at one batch index: Stan-named draws -> {name: value[shape]}."""
    out = {}
    for name, shape in shapes.items():
        if not shape:
            out[name] = np.asarray(draws[name][index])
            continue
        flat = [
            draws[f"{name}[{','.join(str(i + 1) for i in ix)}]"][index] for ix in np.ndindex(*shape)
        ]
        out[name] = np.asarray(flat).reshape(shape)
    return out


@functools.cache
def initial_point(name: str) -> tuple[float, dict[str, np.ndarray], set[str]]:
    """Potential energy at an init_to_uniform point (as NUTS starts), the values there of every
    sample and deterministic site, and the names of the observed sites. Eager, so no compiling."""
    posterior = load_posterior(name)
    model, data = posterior.model, posterior.data
    with precision(name):
        point = substitute(seed(model, 0), substitute_fn=init_to_uniform)
        sites = trace(point).get_trace(**data)
        latent = {
            k: site["value"]
            for k, site in sites.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        energy = float(potential_energy(model, (), data, unconstrain_fn(model, (), data, latent)))
    values = {
        k: np.asarray(site["value"])
        for k, site in sites.items()
        if site["type"] == "deterministic" or (site["type"] == "sample" and k in latent)
    }
    observed = {k for k, site in sites.items() if site["type"] == "sample" and site["is_observed"]}
    return energy, values, observed


@pytest.mark.parametrize("name", POSTERIOR_NAMES)
def test_model_initialises_with_finite_potential_energy(name):
    energy, _, observed = initial_point(name)
    assert np.isfinite(energy)
    # Every observed site takes a data array of the same name (mu_prior is a factor).
    data = load_posterior(name).data
    assert observed - {"mu_prior"} <= set(data)


@pytest.mark.parametrize("name", POSTERIOR_NAMES)
def test_sites_cover_the_reference_parameters(name):
    posterior = load_posterior(name)
    draws = reference(name)
    assert all(v.shape == (10, 1000) and v.dtype == np.float64 for v in draws.values())
    # parameter_shapes names exactly the reference parameters ...
    zeros = {k: np.zeros((1, 1, *shape)) for k, shape in posterior.parameter_shapes.items()}
    assert set(stan_names(zeros)) == set(draws)
    # ... and each is a sample or deterministic site of the model with that shape.
    _, values, _ = initial_point(name)
    for site, shape in posterior.parameter_shapes.items():
        assert values[site].shape == shape, site
    assert set(draws) <= set(stan_names({k: v[None, None] for k, v in values.items()}))


def test_data_types():
    assert load_posterior(GP).data["k"].dtype == np.int64
    assert load_posterior("arK-arK").data["K"] == 5
    for name in POSTERIOR_NAMES:
        arrays = [v for v in load_posterior(name).data.values() if isinstance(v, np.ndarray)]
        assert all(v.dtype in (np.float64, np.int64) for v in arrays)


def test_stan_names_round_trip():
    rng = np.random.default_rng(0)
    shapes = {"a": (), "b": (4,), "c": (2, 3)}
    samples = {k: rng.normal(size=(2, 3, *shape)) for k, shape in shapes.items()}
    named = stan_names(samples)
    assert list(named) == [
        "a",
        *(f"b[{i}]" for i in range(1, 5)),
        *("c[1,1]", "c[1,2]", "c[1,3]", "c[2,1]", "c[2,2]", "c[2,3]"),
    ]
    np.testing.assert_array_equal(named["c[2,1]"], samples["c"][:, :, 1, 0])
    for index in np.ndindex(2, 3):
        back = unflatten(named, shapes, index)
        for k, v in samples.items():
            np.testing.assert_array_equal(back[k], v[index])
    # Other batch ranks; jax arrays in, numpy out.
    assert list(stan_names({"x": jnp.zeros((5, 2))}, batch_ndims=1)) == ["x[1]", "x[2]"]
    assert isinstance(stan_names({"x": jnp.zeros((5, 2))}, batch_ndims=1)["x[1]"], np.ndarray)
    assert stan_names({"x": np.ones(2)}, batch_ndims=0)["x[2]"].shape == ()
    with pytest.raises(ValueError, match="batch_ndims"):
        stan_names({"x": np.ones(3)})


def test_unknown_name_lists_the_known_ones():
    for load in (load_posterior, load_reference_draws):
        with pytest.raises(ValueError, match="eight_schools-eight_schools_noncentered"):
            load("eight_schools-eight_schools_centered")


# ---------------------------------------------------------------------------------------------
# Log densities at reference draws against hand-written scipy densities (constrained space, no
# Jacobians: numpyro's log_density is the log joint of the sites' values). Each takes the data
# and the reference parameters at one draw; the site values it passes to the model are its own
# business (theta_trans from theta, f_tilde from f).


def eight_schools(data, p):
    theta_trans = (p["theta"] - p["mu"]) / p["tau"]
    log_joint = (
        stats.norm.logpdf(p["mu"], 0, 5)
        + stats.halfcauchy.logpdf(p["tau"], scale=5)
        + stats.norm.logpdf(theta_trans).sum()
        + stats.norm.logpdf(data["y"], p["theta"], data["sigma"]).sum()
    )
    return {"mu": p["mu"], "tau": p["tau"], "theta_trans": theta_trans}, log_joint


def kidiq(data, p):
    beta, sigma = p["beta"], p["sigma"]
    mean = beta[0] + beta[1] * data["mom_iq"]
    log_joint = (
        stats.halfcauchy.logpdf(sigma, scale=2.5)
        + stats.norm.logpdf(data["kid_score"], mean, sigma).sum()
    )
    return p, log_joint


def ark(data, p):
    y, K = data["y"], data["K"]
    log_joint = (
        stats.norm.logpdf(p["alpha"], 0, 10)
        + stats.norm.logpdf(p["beta"], 0, 10).sum()
        + stats.halfcauchy.logpdf(p["sigma"], scale=2.5)
    )
    for t in range(K, len(y)):
        mean = p["alpha"] + sum(p["beta"][k - 1] * y[t - k] for k in range(1, K + 1))
        log_joint += stats.norm.logpdf(y[t], mean, p["sigma"])
    return p, log_joint


def garch(data, p):
    # Flat prior on mu, alpha0 > 0 and the triangle 0 < beta1 < 1 - alpha1 < 1: a constant.
    assert 0 < p["beta1"] < 1 - p["alpha1"]
    y, sigma = data["y"], [float(data["sigma1"])]
    for t in range(1, len(y)):
        variance = p["alpha0"] + p["alpha1"] * (y[t - 1] - p["mu"]) ** 2
        sigma.append(np.sqrt(variance + p["beta1"] * sigma[-1] ** 2))
    return p, stats.norm.logpdf(y, p["mu"], np.asarray(sigma)).sum()


def gp(data, p):
    x, k = data["x"], data["k"]
    cov = p["alpha"] ** 2 * np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * p["rho"] ** 2))
    chol = np.linalg.cholesky(cov + 1e-10 * np.eye(len(x)))
    f_tilde = linalg.solve_triangular(chol, p["f"], lower=True)
    log_joint = (
        stats.gamma.logpdf(p["rho"], 25, scale=1 / 4)
        + stats.halfnorm.logpdf(p["alpha"], scale=2)
        + stats.norm.logpdf(f_tilde).sum()
        + stats.poisson.logpmf(k, np.exp(p["f"])).sum()
    )
    return {"rho": p["rho"], "alpha": p["alpha"], "f_tilde": f_tilde}, log_joint


def gauss_mix(data, p):
    mu, sigma, theta = p["mu"], p["sigma"], p["theta"]
    assert mu[0] < mu[1]
    mixture = special.logsumexp(
        [
            np.log(theta) + stats.norm.logpdf(data["y"], mu[0], sigma[0]),
            np.log1p(-theta) + stats.norm.logpdf(data["y"], mu[1], sigma[1]),
        ],
        axis=0,
    )
    log_joint = (
        stats.norm.logpdf(mu, 0, 2).sum()
        + stats.halfnorm.logpdf(sigma, scale=2).sum()
        + stats.beta.logpdf(theta, 5, 5)
        + mixture.sum()
    )
    return p, log_joint


HAND_WRITTEN = {
    "eight_schools-eight_schools_noncentered": eight_schools,
    "kidiq-kidscore_momiq": kidiq,
    "arK-arK": ark,
    "garch-garch11": garch,
    GP: gp,
    "low_dim_gauss_mix-low_dim_gauss_mix": gauss_mix,
}


@pytest.mark.parametrize("name", POSTERIOR_NAMES)
def test_log_density_differences_match_the_stan_model(name):
    posterior = load_posterior(name)
    draws = reference(name)
    numpyro_values, scipy_values = [], []
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. the gp model's float32 warning
        for index in DRAWS:
            params = unflatten(draws, posterior.parameter_shapes, index)
            sites, expected = HAND_WRITTEN[name](posterior.data, params)
            sites = {k: jnp.asarray(v) for k, v in sites.items()}
            actual, trace = log_density(posterior.model, (), posterior.data, sites)
            numpyro_values.append(float(actual))
            scipy_values.append(float(expected))
            # The deterministic sites reproduce the reference parameters (theta, f).
            for site, value in params.items():
                np.testing.assert_allclose(trace[site]["value"], value, rtol=1e-9, atol=1e-9)
    numpyro_values, scipy_values = np.asarray(numpyro_values), np.asarray(scipy_values)
    assert np.all(np.isfinite(numpyro_values))
    np.testing.assert_allclose(
        numpyro_values - numpyro_values[0], scipy_values - scipy_values[0], rtol=0, atol=1e-7
    )
    # The draws differ enough for the comparison to mean something.
    assert np.ptp(scipy_values) > 0.1


@pytest.mark.parametrize("name", POSTERIOR_NAMES)
def test_dims_name_every_axis_of_every_site_with_axes(name):
    """`Posterior.dims` (for ArviZ) has one name per axis of each site with axes, and no more."""
    posterior = load_posterior(name)
    with precision(name):
        sites = trace(substitute(seed(posterior.model, 0), substitute_fn=init_to_uniform))
        shapes = {
            k: np.shape(site["value"])
            for k, site in sites.get_trace(**posterior.data).items()
            if site["type"] in ("sample", "deterministic") and k != "mu_prior"  # a factor
        }
    assert {k: len(v) for k, v in posterior.dims.items()} == {
        k: len(shape) for k, shape in shapes.items() if shape
    }
