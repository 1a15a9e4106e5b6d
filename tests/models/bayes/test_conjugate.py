"""The conjugate oracles against NumPyro's own log density, quadrature and a second algebra.

Bayes' rule gives log p(y, θ) − log p(θ | y) = log p(y) at every θ, so the NumPyro joint log
density minus the exact log posterior density must be constant and equal the exact log evidence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy import integrate, stats

from ppl.models.bayes.conjugate import (
    ConjugateProblem,
    beta_binomial,
    conjugate_problems,
    linear_regression,
    normal_normal,
)

NN_ARGS = {"prior_mean": 0.7, "prior_sd": 1.5, "noise_sd": 0.8}
BB_ARGS = {"trials": 15, "a": 1.5, "b": 4.0}
LR_ARGS = {"prior_sd": 1.3, "noise_sd": 0.4}


def all_problems() -> list[ConjugateProblem]:
    defaults = conjugate_problems(jax.random.key(0))
    others = (
        normal_normal(jax.random.key(1), num_observations=7, **NN_ARGS),
        beta_binomial(jax.random.key(2), num_groups=4, **BB_ARGS),
        linear_regression(jax.random.key(3), num_observations=12, num_features=4, **LR_ARGS),
    )
    return [*defaults, *others]


PROBLEMS = all_problems()
IDS = [f"{p.name}-{i}" for i, p in enumerate(PROBLEMS)]


def regression_posterior_via_evidence(problem: ConjugateProblem, prior_sd: float, noise_sd: float):
    """mean = s0² Xᵀ Σ_y⁻¹ y, cov = s0² I − s0⁴ Xᵀ Σ_y⁻¹ X with Σ_y = σ² I + s0² X Xᵀ."""
    X = np.asarray(problem.data["X"], np.float64)
    y = np.asarray(problem.data["y"], np.float64)
    evidence_cov = noise_sd**2 * np.eye(X.shape[0]) + prior_sd**2 * X @ X.T
    mean = prior_sd**2 * X.T @ np.linalg.solve(evidence_cov, y)
    cov = prior_sd**2 * np.eye(X.shape[1]) - prior_sd**4 * X.T @ np.linalg.solve(evidence_cov, X)
    return mean, cov


def hyperparameters(index: int) -> dict[str, float]:
    return LR_ARGS if index >= 3 else {"prior_sd": 1.0, "noise_sd": 0.5}


def params_and_log_posterior(problem: ConjugateProblem, index: int):
    """Several parameter values and the exact log posterior density at each."""
    rng = np.random.default_rng(index)
    if problem.name == "normal_normal":
        mean, sd = problem.posterior_mean["mu"], problem.posterior_sd["mu"]
        values = mean + sd * np.array([-3.0, -1.0, 0.0, 0.5, 2.5])
        return [{"mu": v} for v in values], stats.norm.logpdf(values, mean, sd)
    if problem.name == "beta_binomial":
        mean, sd = problem.posterior_mean["p"], problem.posterior_sd["p"]
        concentration = mean * (1 - mean) / sd**2 - 1  # recover Beta(a', b') from mean and sd
        a, b = mean * concentration, (1 - mean) * concentration
        values = np.array([0.05, 0.2, mean, 0.5, 0.9])
        return [{"p": v} for v in values], stats.beta.logpdf(values, a, b)
    mean, cov = regression_posterior_via_evidence(problem, **hyperparameters(index))
    values = rng.multivariate_normal(mean, 4 * cov, size=5)
    return [{"weights": v} for v in values], stats.multivariate_normal.logpdf(values, mean, cov)


def widen(array: jax.Array) -> type:
    return np.float64 if jnp.issubdtype(array.dtype, jnp.floating) else np.int64


@pytest.mark.parametrize("index", range(len(PROBLEMS)), ids=IDS)
def test_joint_minus_posterior_is_the_log_evidence(index):
    problem = PROBLEMS[index]
    params, log_posterior = params_and_log_posterior(problem, index)
    with jax.enable_x64(True):
        # Widen the stored data exactly (float32 -> float64, int32 -> int64) so that NumPyro
        # evaluates in float64 throughout; the oracles were computed from these same values.
        data = {k: jnp.asarray(np.asarray(v).astype(widen(v))) for k, v in problem.data.items()}
        log_joint = np.array(
            [log_density(problem.model, (), data, jax.tree.map(jnp.asarray, p))[0] for p in params]
        )
    assert log_joint.dtype == np.float64
    differences = log_joint - log_posterior
    np.testing.assert_allclose(differences, problem.log_evidence, rtol=0, atol=1e-8)


@pytest.mark.parametrize("index", range(len(PROBLEMS)), ids=IDS)
def test_oracles_cover_exactly_the_latent_sites(index):
    problem = PROBLEMS[index]
    trace = handlers.trace(handlers.seed(problem.model, 0)).get_trace(**problem.data)
    latent = {
        name for name, site in trace.items() if site["type"] == "sample" and not site["is_observed"]
    }
    assert set(problem.posterior_mean) == set(problem.posterior_sd) == latent
    for name in latent:
        assert problem.posterior_mean[name].shape == trace[name]["value"].shape
        assert problem.posterior_sd[name].shape == trace[name]["value"].shape
        assert np.all(problem.posterior_sd[name] > 0)
    assert isinstance(problem.log_evidence, float) and np.isfinite(problem.log_evidence)


def test_the_identity_check_detects_a_wrong_posterior():
    problem = PROBLEMS[0]
    wrong = problem._replace(posterior_mean={"mu": problem.posterior_mean["mu"] + 0.05})
    params, log_posterior = params_and_log_posterior(wrong, 0)
    log_joint = np.array([log_density(problem.model, (), problem.data, p)[0] for p in params])
    assert np.ptp(log_joint - log_posterior) > 1e-2


def log_evidence_by_quadrature(log_joint, center: float, lower: float, upper: float) -> float:
    scale = log_joint(center)
    value, _ = integrate.quad(
        lambda x: np.exp(log_joint(x) - scale),
        lower,
        upper,
        points=[center],
        epsabs=0,
        epsrel=1e-11,
        limit=200,
    )
    return scale + np.log(value)


@pytest.mark.parametrize(
    ("problem", "args"),
    [(PROBLEMS[0], {"prior_mean": 0.0, "prior_sd": 2.0, "noise_sd": 1.0}), (PROBLEMS[3], NN_ARGS)],
)
def test_normal_normal_evidence_by_quadrature(problem, args):
    y = np.asarray(problem.data["y"], np.float64)

    def log_joint(mu: float) -> float:
        prior = stats.norm.logpdf(mu, args["prior_mean"], args["prior_sd"])
        return prior + stats.norm.logpdf(y, mu, args["noise_sd"]).sum()

    mean, sd = float(problem.posterior_mean["mu"]), float(problem.posterior_sd["mu"])
    expected = log_evidence_by_quadrature(log_joint, mean, mean - 40 * sd, mean + 40 * sd)
    np.testing.assert_allclose(problem.log_evidence, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("problem", "args"), [(PROBLEMS[1], {"trials": 20, "a": 2.0, "b": 3.0}), (PROBLEMS[4], BB_ARGS)]
)
def test_beta_binomial_evidence_by_quadrature(problem, args):
    k = np.asarray(problem.data["successes"])
    assert int(problem.data["trials"]) == args["trials"]

    def log_joint(p: float) -> float:
        prior = stats.beta.logpdf(p, args["a"], args["b"])
        return prior + stats.binom.logpmf(k, args["trials"], p).sum()

    expected = log_evidence_by_quadrature(log_joint, float(problem.posterior_mean["p"]), 0.0, 1.0)
    np.testing.assert_allclose(problem.log_evidence, expected, rtol=1e-6)


@pytest.mark.parametrize("index", [2, 5])
def test_linear_regression_posterior_via_the_evidence_covariance(index):
    problem = PROBLEMS[index]
    mean, cov = regression_posterior_via_evidence(problem, **hyperparameters(index))
    np.testing.assert_allclose(problem.posterior_mean["weights"], mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(problem.posterior_sd["weights"], np.sqrt(np.diag(cov)), rtol=1e-9)


@pytest.mark.parametrize("make", [normal_normal, beta_binomial, linear_regression])
def test_keys_determine_the_data(make):
    first, again, other = make(jax.random.key(5)), make(jax.random.key(5)), make(jax.random.key(6))
    assert first.data.keys() == again.data.keys() == other.data.keys()
    for name in first.data:
        np.testing.assert_array_equal(first.data[name], again.data[name])
    assert first.log_evidence == again.log_evidence
    varying = [name for name in first.data if name != "trials"]
    for name in varying:
        assert not np.array_equal(first.data[name], other.data[name]), name
